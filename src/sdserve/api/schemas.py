"""Response models (they document the API in /docs and /openapi.json)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class GenerateResponse(BaseModel):
    images: list[str]
    parameters: dict[str, Any]
    generation_time: float
    seed_used: int
    job_id: str
    seeds: list[int]
    image_ids: list[str]
    warnings: list[str]
    cached: bool = False


class ImageView(BaseModel):
    # id and url are null for an image withheld by the image check (docs/safety.md)
    # or deleted by the image TTL (docs/security.md, retention).
    id: str | None
    url: str | None
    seed: int
    withheld: bool = False
    reason: str | None = Field(None, description="why the image check withheld it")
    expired: bool = Field(False, description="deleted by the image retention TTL")


class ResultView(BaseModel):
    images: list[ImageView]
    generation_time: float
    seed_used: int
    warnings: list[str]
    cached: bool = False


class ErrorView(BaseModel):
    type: str
    message: str


class ProgressView(BaseModel):
    step: int
    total: int


class WorkflowRef(BaseModel):
    id: str
    step: int


class JobView(BaseModel):
    id: str
    object: str
    status: str
    priority: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    queue_position: int | None
    attempts: int
    progress: ProgressView
    parameters: dict[str, Any]
    result: ResultView | None
    error: ErrorView | None
    workflow: WorkflowRef | None = None
    links: dict[str, str]


class JobList(BaseModel):
    object: str = "list"
    data: list[JobView]
    next_cursor: str | None


class ModelPlacement(BaseModel):
    """Where a model is loaded now (from the workers' published state)."""

    worker: str
    host: str
    device: str
    memory_bytes: int | None  # weights held there (None: the worker does not say)


class ModelView(BaseModel):
    # OpenAI's model object (its SDK reads these four) ...
    id: str
    object: str = "model"
    created: int
    owned_by: str
    # ... and ours.
    name: str
    family: str
    source_kind: str  # folder | single-file | hub
    default_width: int
    default_height: int
    default_scheduler: str
    dtype: str | None
    default: bool
    loaded: bool
    tasks: list[str]
    revision: str
    aliases: list[str]
    loaded_on: list[ModelPlacement]


class RolloutView(BaseModel):
    alias: str
    versions: dict[str, float]  # model -> share (sums to 1)
    sticky: bool


class RouteView(BaseModel):
    name: str
    to: str
    conditions: dict[str, object]


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelView]
    rollouts: list[RolloutView] = []
    routes: list[RouteView] = []
