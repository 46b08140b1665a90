"""Routing rules: send a request that a cheaper model serves well enough to it.

Rules are checked in the registry's order; the first whose every condition holds
fires. A request opts out with ``"routing": false``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestFacts:
    """What rules look at, after defaults (size from the model when not given)."""

    requested: str  # model or alias the request named (or the task's default)
    resolved: str  # the model it resolved to (after an alias or rollout)
    task: str
    pixels: int
    steps: int
    prompt_chars: int
    priority: str


@dataclass(frozen=True)
class RouteRule:
    name: str
    to: str
    from_models: tuple[str, ...] = ()
    max_pixels: int | None = None
    min_pixels: int | None = None
    max_steps: int | None = None
    min_steps: int | None = None
    max_prompt_chars: int | None = None
    min_prompt_chars: int | None = None
    priorities: tuple[str, ...] = ()

    def matches(self, f: RequestFacts) -> bool:
        bounds = (
            (self.max_pixels, f.pixels, True),
            (self.min_pixels, f.pixels, False),
            (self.max_steps, f.steps, True),
            (self.min_steps, f.steps, False),
            (self.max_prompt_chars, f.prompt_chars, True),
            (self.min_prompt_chars, f.prompt_chars, False),
        )
        for limit, value, is_max in bounds:
            if limit is not None and (value > limit if is_max else value < limit):
                return False
        if self.from_models and not {f.requested, f.resolved} & set(self.from_models):
            return False
        if self.priorities and f.priority not in self.priorities:
            return False
        return f.resolved != self.to


def first_match(rules: tuple[RouteRule, ...], facts: RequestFacts) -> RouteRule | None:
    return next((r for r in rules if r.matches(facts)), None)
