"""Content safety: the prompt policy (checked at submit) and image checkers (in workers).

Torch-free; the checkpoint's own safety checker lives in ``sdserve.engine.safety_checker``.
See docs/safety.md.
"""

from sdserve.safety.decisions import (
    CATEGORIES,
    DEFAULT_THRESHOLD,
    ImageChecker,
    ImageVerdict,
    PolicyDecision,
    PromptPolicy,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_THRESHOLD",
    "ImageChecker",
    "ImageVerdict",
    "PolicyDecision",
    "PromptPolicy",
]
