"""The one table from scheduler names (domain.limits.SCHEDULER_NAMES) to diffusers.

Schedulers are built with ``from_config`` from the pipeline's *original* scheduler
config (kept at load time), so switching never reloads weights and one request's
overrides (e.g. Karras sigmas) never leak into the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdserve.domain.errors import GenerationFailed, InvalidRequest
from sdserve.domain.limits import SCHEDULER_NAMES


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str  # attribute of the diffusers package (imported lazily)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    needs: str | None = None  # an optional Python package the class requires


# Karras sigmas are switched off explicitly where a scheduler supports them, so a
# model whose own config enables them still gets plain "dpmpp_2m" / "euler".
SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler"),
    "euler": SchedulerSpec("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler"),
    "dpmpp_2m": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    "dpmpp_2m_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
    "lcm": SchedulerSpec("LCMScheduler"),
    "pndm": SchedulerSpec("PNDMScheduler", {"skip_prk_steps": True}),
    "heun": SchedulerSpec("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "lms": SchedulerSpec("LMSDiscreteScheduler", needs="scipy"),
}

assert set(SCHEDULERS) == set(SCHEDULER_NAMES), "scheduler table out of step with limits"


def scheduler_class(name: str) -> Any:
    spec = SCHEDULERS.get(name)
    if spec is None:
        raise InvalidRequest.single(
            "scheduler", f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}"
        )
    if spec.needs is not None:
        try:
            __import__(spec.needs)
        except ImportError as exc:
            raise GenerationFailed(
                f"scheduler {name!r} needs the {spec.needs!r} package: pip install {spec.needs}"
            ) from exc
    import diffusers

    return getattr(diffusers, spec.class_name)


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> Any:
    """A fresh scheduler ``name`` built from a pipeline's original scheduler config."""
    cls = scheduler_class(name)
    return cls.from_config(dict(base_config), **SCHEDULERS[name].overrides)
