"""Counters for safety decisions, shared by the API (prompt) and workers (image).

Registered on a registry the caller passes in: nothing global at import, so every
app or worker (and every test) has its own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from sdserve.safety.decisions import ImageVerdict, PolicyDecision

NONE = "none"  # category label of a decision no category drove


class SafetyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "sdserve_safety_decisions_total",
            "Safety decisions by stage (prompt|image), category and outcome "
            "(approved|refused|flagged|error). A refusal counts once per category over "
            "the threshold.",
            ["stage", "category", "outcome"],
            registry=registry,
        )

    def prompt(self, decision: PolicyDecision) -> None:
        if decision.error is not None:
            self.decisions.labels("prompt", NONE, "error").inc()
        elif decision.approved:
            self.decisions.labels("prompt", NONE, "approved").inc()
        else:
            for category in decision.flagged or [NONE]:
                self.decisions.labels("prompt", category, "refused").inc()

    def images(self, verdicts: list[ImageVerdict]) -> None:
        for verdict in verdicts:
            if not verdict.flagged:
                self.decisions.labels("image", NONE, "approved").inc()
                continue
            for category in verdict.labels or (NONE,):
                self.decisions.labels("image", category, "flagged").inc()

    def image_error(self) -> None:
        """The checker raised: the worker failed closed for this batch."""
        self.decisions.labels("image", NONE, "error").inc()
