"""Workflows: ordered steps (e.g. txt2img -> inpaint -> upscale), each an ordinary job.

A workflow is a parent record; its steps run one at a time as ordinary jobs, each
scheduled and batched with other traffic at the workflow's priority. When a step's job
ends, the queue advances the workflow in the same atomic section (queue/transitions),
so a crash never loses a finished step: the running step's job is reclaimed like any
job and the workflow resumes at that step.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sdserve.domain.jobs import Job
from sdserve.domain.requests import JobSpec, Priority


class WorkflowStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        return self is not WorkflowStatus.running


class StepInput(StrEnum):
    """Where a step's input image comes from."""

    none = "none"  # txt2img
    previous = "previous"  # the first image of the step before
    original = "original"  # the workflow's own input image
    given = "given"  # an image id named by the step itself


class WorkflowStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: JobSpec  # resolved; ``image`` is filled in when a "previous" step is dispatched
    input: StepInput
    job_id: str | None = None


class WorkflowError(BaseModel):
    step: int
    type: str
    message: str


class NewWorkflow(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: new_workflow_id())
    steps: list[WorkflowStep]
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    owner: str | None = None
    max_attempts: int = 3


class Workflow(BaseModel):
    id: str
    status: WorkflowStatus
    steps: list[WorkflowStep]
    current: int  # index of the step whose job is queued or running
    created_at: float
    updated_at: float
    finished_at: float | None = None
    callback_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    owner: str | None = None
    max_attempts: int = 3
    error: WorkflowError | None = None

    @property
    def priority(self) -> Priority:
        return self.steps[0].spec.priority

    @property
    def job_ids(self) -> list[str]:
        return [s.job_id for s in self.steps if s.job_id is not None]

    def public(self, jobs: dict[str, Job], base_url: str = "") -> dict[str, Any]:
        """The client view: every step's parameters, status and images (``jobs`` are
        the step jobs by id), progress as step k of n plus the denoising step."""
        steps: list[dict[str, Any]] = []
        for index, step in enumerate(self.steps):
            job = jobs.get(step.job_id) if step.job_id else None
            view: dict[str, Any] = {
                "index": index,
                "task": step.spec.task.value,
                "input": step.input.value,
                "job_id": step.job_id,
                "status": job.status.value if job else "pending",
                "parameters": (job.spec if job else step.spec).public(),
                "result": None,
                "error": job.error.model_dump() if job and job.error else None,
            }
            if job is not None and job.result is not None:
                view["result"] = job.public(base_url=base_url)["result"]
            steps.append(view)
        current = jobs.get(self.steps[self.current].job_id or "")
        last = steps[-1]["result"] if self.status.value == "succeeded" else None
        return {
            "id": self.id,
            "object": "workflow",
            "status": self.status.value,
            "priority": self.priority.value,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "progress": {
                "step": self.current + 1,
                "steps": len(self.steps),
                "denoising": {
                    "step": current.progress_step if current else 0,
                    "total": current.progress_total if current else 0,
                },
            },
            "steps": steps,
            "result": last,
            "error": self.error.model_dump() if self.error else None,
            "links": {"self": f"{base_url}/v1/workflows/{self.id}"},
        }


def new_workflow_id() -> str:
    return "wf_" + uuid.uuid4().hex
