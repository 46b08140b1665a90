"""What a safety check decides, and the interfaces every checker implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sdserve.domain.errors import ContentPolicyViolation, ModerationUnavailable

if TYPE_CHECKING:
    from PIL.Image import Image

# The built-in categories; an operator's term lists may add more.
CATEGORIES = ("violence", "adult", "hate", "self-harm")
DEFAULT_THRESHOLD = 0.7


@dataclass(frozen=True)
class PolicyDecision:
    """The verdict on one prompt.

    ``categories`` holds a score in [0, 1] per category; every category at or above
    ``threshold`` refuses. ``confidence`` is how sure the decision is: the highest
    score for a refusal, one minus it for an approval. ``matches`` (which phrases hit)
    is for logs and audit only: clients get ``as_dict()``, which leaves it out so the
    error does not teach how to word around the list.
    """

    approved: bool
    confidence: float
    categories: dict[str, float]
    reason: str
    source: str  # builtin | external | builtin+external | off
    threshold: float = DEFAULT_THRESHOLD
    stage: str = "prompt"
    matches: dict[str, list[str]] = field(default_factory=dict)
    # Set when the checker failed (timeout, bad answer); ``approved`` then says
    # whether the deployment fails open or closed.
    error: str | None = None

    @property
    def flagged(self) -> list[str]:
        return [c for c, s in self.categories.items() if s >= self.threshold]

    def as_dict(self) -> dict[str, Any]:
        return {
            "approved": self.approved,
            "confidence": round(self.confidence, 4),
            "categories": {c: round(s, 4) for c, s in self.categories.items()},
            "reason": self.reason,
            "stage": self.stage,
            "source": self.source,
        }

    def raise_if_refused(self) -> None:
        """400 ``content_policy_violation`` for a refusal; 503 when the checker failed."""
        if self.approved:
            return
        if self.error is not None:
            raise ModerationUnavailable(self.reason)
        raise ContentPolicyViolation(self.reason, **self.as_dict())


def decide(
    categories: dict[str, float],
    threshold: float,
    source: str,
    matches: dict[str, list[str]] | None = None,
) -> PolicyDecision:
    """Turn category scores into a decision (shared by every prompt policy)."""
    flagged = sorted(
        ((c, s) for c, s in categories.items() if s >= threshold), key=lambda cs: -cs[1]
    )
    top = max(categories.values(), default=0.0)
    if flagged:
        listed = ", ".join(f"{c} ({s:.2f})" for c, s in flagged)
        reason = f"prompt refused by the content policy: {listed} at or above {threshold:.2f}"
        return PolicyDecision(
            False, top, categories, reason, source, threshold, matches=matches or {}
        )
    return PolicyDecision(
        True,
        1.0 - top,
        categories,
        "prompt approved",
        source,
        threshold,
        matches=matches or {},
    )


@runtime_checkable
class PromptPolicy(Protocol):
    """Checks a prompt before a job is queued (every route, every task)."""

    name: str

    def check(
        self, prompt: str, negative_prompt: str = "", threshold: float | None = None
    ) -> PolicyDecision: ...


@dataclass(frozen=True)
class ImageVerdict:
    """The verdict on one generated image."""

    flagged: bool
    categories: dict[str, float] = field(default_factory=dict)  # score per category
    reason: str = ""
    source: str = ""
    labels: tuple[str, ...] = ()  # the categories that flagged it

    def as_dict(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "categories": {c: round(s, 4) for c, s in self.categories.items()},
            "labels": list(self.labels),
            "reason": self.reason,
            "source": self.source,
        }


@runtime_checkable
class ImageChecker(Protocol):
    """Checks generated images before they are stored; one verdict per image, in order.

    Implementations never change the images. A checker that cannot decide raises:
    the worker then holds or fails the job (fail closed), never stores it unchecked.
    """

    name: str

    def check(self, images: list[Image]) -> list[ImageVerdict]: ...
