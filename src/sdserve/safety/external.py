"""A prompt policy backed by an external moderation service (OpenAI moderation shape).

Request: ``POST <url>`` with ``{"input": "<prompt>"}`` (plus ``"model"`` when set) and
``Authorization: Bearer <key>`` when a key is set. Answer::

    {"results": [{"flagged": true,
                  "categories": {"violence": true, ...},
                  "category_scores": {"violence": 0.93, ...}}]}

Its categories are folded onto ours (the highest score of the ones mapped to a
category wins) and judged against our threshold, so a per-call threshold works the
same as with the built-in policy. A flagged category sent without a score counts as
1.0. Categories we do not map (``illicit`` ...) are kept in ``matches`` for the logs.

When the service errs, times out or answers something that is not that shape, the
decision fails closed (refused, ``error`` set: the API answers 503, retry later)
unless ``fail_open`` is set (approved, ``error`` still set so it is logged/counted).
Only the prompt is sent: negative prompts list what to avoid ("nude, blurry") and
would be flagged for it.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdserve.safety.decisions import DEFAULT_THRESHOLD, PolicyDecision, decide

CATEGORY_MAP: dict[str, str] = {
    "violence": "violence",
    "violence/graphic": "violence",
    "illicit/violent": "violence",
    "sexual": "adult",
    "sexual/minors": "adult",
    "hate": "hate",
    "hate/threatening": "hate",
    "harassment": "hate",
    "harassment/threatening": "hate",
    "self-harm": "self-harm",
    "self-harm/intent": "self-harm",
    "self-harm/instructions": "self-harm",
}
# Spellings other services (and older API versions) use for the same categories.
_ALIASES = {
    "self_harm": "self-harm",
    "sexual_minors": "sexual/minors",
    "hate_threatening": "hate/threatening",
}


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")
    flagged: bool
    categories: dict[str, bool] = Field(default_factory=dict)
    category_scores: dict[str, float] = Field(default_factory=dict)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    results: list[_Result] = Field(min_length=1)


class ModerationError(Exception):
    """The service could not give a usable answer."""


def _canonical(name: str) -> str:
    name = name.strip().lower()
    return _ALIASES.get(name, name)


def map_result(result: _Result) -> tuple[dict[str, float], list[str]]:
    """Their categories -> (our scores, their categories we do not map)."""
    scores = {c: 0.0 for c in sorted(set(CATEGORY_MAP.values()))}
    unmapped: list[str] = []
    names = {_canonical(n) for n in (*result.categories, *result.category_scores)}
    flags = {_canonical(k): v for k, v in result.categories.items()}
    values = {_canonical(k): v for k, v in result.category_scores.items()}
    for name in sorted(names):
        score = values.get(name)
        if score is None:
            score = 1.0 if flags.get(name) else 0.0
        if math.isnan(score) or not 0.0 <= score <= 1.0:
            raise ModerationError(f"score for {name!r} is {score}, not in [0, 1]")
        ours = CATEGORY_MAP.get(name)
        if ours is None:
            if flags.get(name):
                unmapped.append(name)
            continue
        scores[ours] = max(scores[ours], score)
    return scores, unmapped


class ExternalModerationPolicy:
    name = "external"

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        timeout: float = 5.0,
        fail_open: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        model: str = "",
        client: httpx.Client | None = None,
    ) -> None:
        if not url:
            raise ValueError("the external moderation policy needs a URL (SDSERVE_MODERATION_URL)")
        self.url = url
        self.fail_open = fail_open
        self.threshold = threshold
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(
            timeout=timeout, headers=headers, follow_redirects=False
        )

    def close(self) -> None:
        self.client.close()

    def ask(self, prompt: str) -> tuple[dict[str, float], list[str]]:
        body: dict[str, Any] = {"input": prompt}
        if self.model:
            body["model"] = self.model
        try:
            response = self.client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise ModerationError(f"timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ModerationError(f"request failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ModerationError(f"answered HTTP {response.status_code}")
        try:
            answer = _Answer.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ModerationError(
                f"answer is not in the moderation shape ({where}: {first['msg']})"
            ) from exc
        return map_result(answer.results[0])

    def check(
        self, prompt: str, negative_prompt: str = "", threshold: float | None = None
    ) -> PolicyDecision:
        limit = self.threshold if threshold is None else threshold
        try:
            scores, unmapped = self.ask(prompt)
        except ModerationError as exc:
            return self._failed(str(exc), limit)
        matches = {"unmapped": unmapped} if unmapped else {}
        return decide(scores, limit, self.name, matches)

    def _failed(self, problem: str, threshold: float) -> PolicyDecision:
        # The reason goes to clients; the service's own problem stays in ``error``.
        if self.fail_open:
            reason = "content moderation unavailable; allowed because fail-open is set"
        else:
            reason = (
                "content moderation is unavailable, so the prompt cannot be checked; retry later"
            )
        return PolicyDecision(
            approved=self.fail_open,
            confidence=0.0,
            categories={},
            reason=reason,
            source=self.name,
            threshold=threshold,
            error=problem,
        )
