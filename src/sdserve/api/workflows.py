"""POST /v1/workflows: resolve every step up front, then enqueue the workflow.

Each step is checked and resolved at submit like a job of its own (model, task,
sizes, defaults, seed), with its input's size known in advance: the previous step's
output size follows from its parameters. So a workflow that would fail at step 3
for a bad parameter is refused before step 1 runs. Only the input image of a
"previous" step is filled in later, when the step before finishes.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from sdserve.api import audit_trail, inputs, quota
from sdserve.api.inputs import DecodedInput
from sdserve.api.model_choice import choice_fields, choose_model
from sdserve.api.services import Services
from sdserve.api.submit import (
    Uploads,
    check_callback,
    check_idempotency_key,
    check_task_fields,
    resolve_spec,
    seal_callback,
)
from sdserve.domain.errors import FieldProblem, InvalidRequest
from sdserve.domain.requests import (
    StepSource,
    Task,
    WorkflowRequest,
    WorkflowStepRequest,
    request_fingerprint,
)
from sdserve.domain.workflows import NewWorkflow, StepInput, Workflow, WorkflowStep
from sdserve.safety.service import check_prompts


def _prefixed(exc: InvalidRequest, prefix: str) -> InvalidRequest:
    return InvalidRequest(
        [FieldProblem(f"{prefix}.{p.field}", p.message, p.limit) for p in exc.problems]
    )


def _source(step: WorkflowStepRequest, index: int, has_original: bool) -> StepInput:
    if step.task is Task.txt2img:
        if step.input is not None:
            raise InvalidRequest.single("input", "a txt2img step takes no input image")
        return StepInput.none
    if step.image is not None or step.image_id is not None:
        if step.input is not None:
            raise InvalidRequest.single("input", "give input or an image of the step's own")
        return StepInput.given
    wanted = step.input or (StepSource.original if index == 0 else StepSource.previous)
    if wanted is StepSource.previous:
        if index == 0:
            raise InvalidRequest.single("input", "the first step has no previous step")
        return StepInput.previous
    if not has_original:
        raise InvalidRequest.single(
            "input", "takes the workflow's image, but the workflow has none (image or image_id)"
        )
    return StepInput.original


async def resolve(
    services: Services, req: WorkflowRequest, uploads: Uploads, owner: str | None
) -> tuple[list[WorkflowStep], list[DecodedInput]]:
    max_bytes = services.settings.max_input_bytes
    unknown = set(uploads.files) - {"image"} - {f"mask_{i}" for i in range(len(req.steps))}
    if unknown:
        raise InvalidRequest.single(
            sorted(unknown)[0], "unexpected file part (image, or mask_<step index>)"
        )
    raw = inputs.raw_input("image", req.image, req.image_id, uploads.files.get("image"), max_bytes)
    original = await inputs.decode(services, raw, tenant=owner) if raw else None
    decoded: list[DecodedInput] = [original] if original else []
    steps: list[WorkflowStep] = []
    previous: tuple[int, int] | None = None
    last = len(req.steps) - 1
    for index, step in enumerate(req.steps):
        prefix = f"steps.{index}"
        try:
            if "priority" in step.model_fields_set:
                raise InvalidRequest.single("priority", "set priority on the workflow")
            source = _source(step, index, original is not None)
            mask_upload = uploads.files.get(f"mask_{index}")
            checked = step
            if mask_upload is not None and step.mask is None:
                checked = step.model_copy(update={"mask": "<upload>"})
            check_task_fields(
                checked, image_given=source in (StepInput.previous, StepInput.original)
            )
            as_step = step.model_copy(update={"priority": req.priority})
            choice = choose_model(services, as_step, None)
            info = choice.info
            image: DecodedInput | None = None
            if source is StepInput.given:
                raw_own = inputs.raw_input("image", step.image, step.image_id, None, max_bytes)
                assert raw_own is not None
                image = await inputs.decode(services, raw_own, tenant=owner)
                decoded.append(image)
            in_size = {
                StepInput.none: None,
                StepInput.given: image.size if image else None,
                StepInput.original: original.size if original else None,
                StepInput.previous: previous,
            }[source]
            mask = None
            raw_mask = inputs.raw_input("mask", step.mask, step.mask_id, mask_upload, max_bytes)
            if raw_mask is not None and in_size is not None:
                mask = await inputs.decode(services, raw_mask, tenant=owner, mask_size=in_size)
                decoded.append(mask)
            spec = resolve_spec(as_step, info, services.settings, in_size)
            spec = spec.model_copy(update=choice_fields(choice, as_step))
            if index < last and spec.num_images != 1:
                raise InvalidRequest.single(
                    "num_images", "only the last step may make more than one image", 1
                )
        except InvalidRequest as exc:
            raise _prefixed(exc, prefix) from exc
        image_id = {StepInput.given: image.id if image else None}.get(source)
        if source is StepInput.original and original is not None:
            image_id = original.id
        spec = spec.model_copy(update={"image": image_id, "mask": mask.id if mask else None})
        steps.append(WorkflowStep(spec=spec, input=source))
        previous = (spec.width, spec.height)
    return steps, decoded


async def submit_workflow(
    services: Services,
    req: WorkflowRequest,
    uploads: Uploads,
    *,
    idempotency_key: str | None = None,
    owner: str | None,
    key_id: str | None = None,
) -> tuple[Workflow, bool]:
    steps, decoded = await resolve(services, req, uploads, owner)
    prompts = [(st.spec.prompt, st.spec.negative_prompt) for st in steps]
    await check_prompts(services, prompts, owner, key_id)
    await check_callback(services, req.callback_url)
    check_idempotency_key(idempotency_key)
    body: dict[str, Any] = req.model_dump(mode="json")
    body["uploads"] = uploads.fingerprint()
    new = NewWorkflow(
        steps=steps,
        callback_url=seal_callback(services, req.callback_url),
        idempotency_key=idempotency_key,
        request_hash=request_fingerprint(body),
        owner=owner,
        max_attempts=services.settings.max_attempts,
    )
    specs = [step.spec for step in steps]
    async with quota.admitted(services, specs, owner=owner, key_id=key_id) as admission:
        await inputs.persist(services, decoded, owner)
        wf, created = await run_in_threadpool(services.queue.enqueue_workflow, new)
        admission.charged = created  # an idempotent replay costs nothing
    if created:
        services.wakeups.notify_workers()
        await audit_trail.record_for(
            services,
            key_id or "open",
            "workflow.create",
            wf.id,
            tenant=owner,
            details={"steps": len(steps), "images": sum(s.num_images for s in specs)},
        )
    return wf, created
