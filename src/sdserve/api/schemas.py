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
    # id and url are null for an image withheld by the image check (docs/safety.md).
    id: str | None
    url: str | None
    seed: int
    withheld: bool = False
    reason: str | None = Field(None, description="why the image check withheld it")


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


class ModelView(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str
    name: str
    family: str
    default_width: int
    default_height: int
    default: bool
    loaded: bool
    tasks: list[str]


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelView]
