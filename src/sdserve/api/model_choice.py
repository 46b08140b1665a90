"""Which model serves a request: the name, alias or A/B rollout it names (or the
task's default), then the routing rules unless it opts out. The choice is recorded
on the job's parameters and counted in the metrics."""

from __future__ import annotations

from typing import Any

from sdserve.api.services import Services
from sdserve.domain.errors import InvalidRequest
from sdserve.domain.requests import SDXL_CONDITIONING, GenerateRequest, Task
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import Choice
from sdserve.models.routing import RequestFacts


def _can(info: ModelInfo, task: Task) -> None:
    if task.value not in info.tasks:
        raise InvalidRequest.single(
            "model",
            f"model {info.name!r} ({info.family}) cannot do {task.value}; "
            f"it does: {', '.join(info.tasks)}",
        )


def choose_model(services: Services, req: GenerateRequest, key_id: str | None) -> Choice:
    """Sticky key for rollouts: the request's ``user``, else the API key, else none
    (each request draws anew)."""
    name = req.model or services.task_models.get(req.task.value)
    if name is None and req.task is Task.upscale:
        raise InvalidRequest.single(
            "model", "no upscaler model is installed (put one in the models folder)"
        )
    catalog = services.catalog
    choice = catalog.choose(name or catalog.default.name, req.user or key_id)
    _can(choice.info, req.task)
    if req.routing and catalog.rules:
        info = choice.info
        facts = RequestFacts(
            requested=choice.requested,
            resolved=info.name,
            task=req.task.value,
            pixels=(req.width or info.default_width) * (req.height or info.default_height),
            steps=req.num_inference_steps,
            prompt_chars=len(req.prompt),
            priority=req.priority.value,
        )
        routed = catalog.route(choice, facts)
        # A rule never sends a request where it would be refused (a task the target
        # cannot do, SDXL conditioning to a non-SDXL model).
        sdxl_only = any(getattr(req, n) is not None for n in SDXL_CONDITIONING)
        fits = req.task.value in routed.info.tasks and (
            not sdxl_only or routed.info.family == "sdxl"
        )
        if routed.rule is not None and fits:
            choice = routed
    check_sdxl_fields(req, choice.info)
    services.metrics.model_choices.labels(
        choice.alias or "", choice.info.name, choice.rule or ""
    ).inc()
    return choice


def check_sdxl_fields(req: GenerateRequest, info: ModelInfo) -> None:
    if info.family == "sdxl":
        return
    for name in SDXL_CONDITIONING:
        if getattr(req, name) is not None:
            raise InvalidRequest.single(
                name, f"only applies to SDXL models; model {info.name!r} is {info.family}"
            )


def choice_fields(choice: Choice, req: GenerateRequest) -> dict[str, Any]:
    """What the job's spec records of the choice (and the SDXL conditioning)."""
    return {
        "model_alias": choice.alias,
        "route": choice.rule,
        "model_revision": choice.info.revision or None,
        "original_size": req.original_size,
        "target_size": req.target_size,
        "crops_coords_top_left": req.crops_coords_top_left,
    }
