"""The API side of content safety: the prompt gate every submit goes through, the
decision record and the metrics, built once per app from its Settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from sdserve.domain.errors import ContentPolicyViolation, ModerationUnavailable, SdserveError
from sdserve.safety.decisions import PolicyDecision, PromptPolicy
from sdserve.safety.factory import build_prompt_policy
from sdserve.safety.metrics import SafetyMetrics
from sdserve.safety.quarantine import KEY_PURPOSE, Quarantine
from sdserve.safety.records import DecisionLog, SafetyRecord, build_decision_log

if TYPE_CHECKING:
    from sdserve.api.services import Services


class HeldForReview(SdserveError):
    """A synchronous generate whose images were flagged and are held for review."""

    type = "held_for_review"

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job {job_id}: an image was flagged by the content check and is held for "
            "review; poll the job to see the decision",
            job_id=job_id,
            poll_url=f"/v1/jobs/{job_id}",
        )


@dataclass
class SafetyServices:
    policy: PromptPolicy
    log: DecisionLog
    metrics: SafetyMetrics
    quarantine: Quarantine
    record_prompts: bool = False

    def close(self) -> None:
        self.log.close()


def safety_of(services: Services) -> SafetyServices:
    """Built on first use and kept on ``services`` (term lists load once)."""
    if services.safety is None:
        s = services.settings
        services.safety = SafetyServices(
            policy=build_prompt_policy(s),
            log=build_decision_log(
                s.queue_backend, s.resolved_database_path, s.redis_url, s.redis_prefix
            ),
            metrics=SafetyMetrics(services.metrics.registry),
            quarantine=Quarantine(services.blobs, services.server_key.derive(KEY_PURPOSE)),
            record_prompts=s.safety_record_prompts,
        )
    return services.safety


def prompt_fields(prompt: str, keep_text: bool) -> dict[str, object]:
    """What the record keeps of a prompt: the text only when the deployment says so."""
    fields: dict[str, object] = {
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
        "prompt_length": len(prompt),
    }
    if keep_text:
        fields["prompt"] = prompt
    return fields


def _threshold(services: Services, owner: str | None, key_id: str | None) -> float:
    """The key's own threshold, else its tenant's, else the deployment's."""
    if key_id is not None:
        key = services.keys.get(key_id)
        if key is not None and key.prompt_threshold is not None:
            return key.prompt_threshold
    if owner is not None:
        tenant = services.keys.tenant(owner)
        if tenant is not None and tenant.prompt_threshold is not None:
            return tenant.prompt_threshold
    return services.settings.prompt_policy_threshold


def _check_all(
    services: Services, prompts: list[tuple[str, str]], owner: str | None, key_id: str | None
) -> None:
    safety = safety_of(services)
    threshold = _threshold(services, owner, key_id)
    for prompt, negative in prompts:
        if not prompt.strip() and not negative.strip():
            continue  # upscale's empty prompt: nothing to judge
        decision = safety.policy.check(prompt, negative, threshold)
        safety.metrics.prompt(decision)
        if decision.approved:
            continue
        _refuse(safety, decision, prompt, owner)


def _refuse(
    safety: SafetyServices, decision: PolicyDecision, prompt: str, owner: str | None
) -> None:
    reason = decision.reason
    if decision.error is not None:  # the service's own problem: for operators only
        reason += f" ({decision.error})"
    record = SafetyRecord(
        kind="prompt",
        subject="prompt",
        tenant=owner,
        outcome="error" if decision.error is not None else "refused",
        actor=f"policy:{decision.source}",
        categories=decision.categories,
        reason=reason,
    ).model_copy(update=prompt_fields(prompt, safety.record_prompts))
    safety.log.add(record)
    if decision.error is not None:
        raise ModerationUnavailable(decision.reason, decision_id=record.id)
    raise ContentPolicyViolation(decision.reason, **decision.as_dict(), decision_id=record.id)


async def check_prompts(
    services: Services,
    prompts: list[tuple[str, str]],
    owner: str | None,
    key_id: str | None = None,
) -> None:
    """Every prompt of a request (a job's, or each workflow step's) before anything is
    queued: 400 content_policy_violation, or 503 moderation_unavailable when the
    external service failed and the deployment fails closed. Refusals are recorded."""
    await run_in_threadpool(_check_all, services, prompts, owner, key_id)
