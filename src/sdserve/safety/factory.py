"""Build the prompt policy and image checker the Settings ask for."""

from __future__ import annotations

from pathlib import Path

from sdserve.config import Settings
from sdserve.safety.builtin import BuiltinPolicy
from sdserve.safety.decisions import ImageChecker, PolicyDecision, PromptPolicy, decide
from sdserve.safety.external import ExternalModerationPolicy


class OffPolicy:
    """SDSERVE_PROMPT_POLICY=off: every prompt is approved, and says so."""

    name = "off"

    def check(
        self, prompt: str, negative_prompt: str = "", threshold: float | None = None
    ) -> PolicyDecision:
        return PolicyDecision(True, 1.0, {}, "prompt policy is off", self.name)


class CombinedPolicy:
    """Built-in first (fast, local); the external service only sees what it approved.

    The first refusal (or failure) decides; an approval carries each category's
    highest score from both.
    """

    name = "builtin+external"

    def __init__(self, first: PromptPolicy, second: PromptPolicy) -> None:
        self.first = first
        self.second = second

    def check(
        self, prompt: str, negative_prompt: str = "", threshold: float | None = None
    ) -> PolicyDecision:
        a = self.first.check(prompt, negative_prompt, threshold)
        if not a.approved:
            return a
        b = self.second.check(prompt, negative_prompt, threshold)
        if not b.approved or b.error is not None:
            return b
        scores = dict(a.categories)
        for cat, score in b.categories.items():
            scores[cat] = max(scores.get(cat, 0.0), score)
        return decide(scores, a.threshold, self.name, a.matches | b.matches)


def build_prompt_policy(settings: Settings) -> PromptPolicy:
    """The policy SDSERVE_PROMPT_POLICY names. Term lists are read and checked here, so
    a broken operator file stops the process at start-up with the file named."""
    mode = settings.prompt_policy
    if mode == "off":
        return OffPolicy()
    threshold = settings.prompt_policy_threshold
    builtin = BuiltinPolicy.load(settings.prompt_policy_terms_dir, threshold)
    if mode == "builtin":
        return builtin
    external = ExternalModerationPolicy(
        settings.moderation_url,
        api_key=settings.moderation_api_key,
        timeout=settings.moderation_timeout_seconds,
        fail_open=settings.moderation_fail_open,
        threshold=threshold,
        model=settings.moderation_model,
    )
    if mode == "external":
        return external
    return CombinedPolicy(builtin, external)


def build_image_checker(settings: Settings, model_dir: Path | None = None) -> ImageChecker | None:
    """The image checker SDSERVE_IMAGE_CHECKER names for one model (None when off).

    ``model``: the checkpoint's own ``safety_checker/`` (torch; loaded in engine/);
    raises ``ModelLoadError`` when the model folder has none, so a deployment that asked
    for image checks never runs without them. ``nudenet``: the optional extra.
    """
    mode = settings.image_checker
    if mode == "off":
        return None
    if mode == "nudenet":
        from sdserve.safety.nudenet import NudeNetChecker

        return NudeNetChecker(threshold=settings.image_checker_threshold)
    from sdserve.domain.errors import ModelLoadError

    if model_dir is None:
        raise ModelLoadError("SDSERVE_IMAGE_CHECKER=model needs the model's folder")
    from sdserve.engine.safety_checker import ModelSafetyChecker

    return ModelSafetyChecker.load(model_dir, device=settings.device)
