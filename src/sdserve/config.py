"""One Settings object; every field is settable as SDSERVE_<NAME>."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDSERVE_", extra="ignore")

    # --- service ---
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8000, description="Port the HTTP server binds.")
    data_dir: Path = Field(Path("data"), description="Root for the database, images, models.")
    public_base_url: str = Field(
        "", description="Prefix for image/job links in responses; empty = relative links."
    )
    log_level: str = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Emit logs as JSON lines.")

    # --- models / engine ---
    model: str = Field(
        "",
        description="Default model: a name under models_dir, a diffusers folder, a "
        ".safetensors file or a hub id. Empty = the demo model (created if absent).",
    )
    models_dir: Path | None = Field(
        None, description="Folder of extra models (default: <data_dir>/models)."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Torch device.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights dtype (auto: fp16 on CUDA, fp32 on CPU)."
    )
    attention_slicing: bool = Field(False, description="Enable attention slicing.")
    vae_slicing: bool = Field(False, description="Decode the VAE one image at a time.")
    vae_tiling: bool = Field(False, description="Decode the VAE in tiles (large images).")
    cpu_offload: bool = Field(False, description="Model CPU offload (low VRAM).")
    torch_compile: bool = Field(False, description="torch.compile the UNet; warmed before ready.")
    batch_invariant: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Run the UNet one row at a time so batched images are bit-identical "
        "to single ones (auto: on for CPU, off for CUDA where batching throughput wins).",
    )
    upscale_tile_size: int = Field(
        256,
        ge=16,
        description="Largest input side an upscaler processes in one piece; larger inputs "
        "are cut into overlapping tiles blended back together, so memory stays bounded.",
    )
    max_loaded_models: int = Field(1, ge=1, description="Models a worker keeps loaded (LRU).")
    torch_threads: int = Field(
        0, ge=0, description="CPU threads for torch in a worker (0 = torch's default)."
    )
    allow_hub_downloads: bool = Field(False, description="Allow loading a hub id (needs network).")

    # --- queue / batching ---
    queue_backend: Literal["sqlite", "memory", "redis"] = Field(
        "sqlite", description="Job store: sqlite (embedded), memory (tests), redis."
    )
    database_path: Path | None = Field(
        None, description="SQLite file (default: <data_dir>/sdserve.db)."
    )
    sqlite_synchronous: Literal["full", "normal"] = Field(
        "full",
        description="fsync policy for client-visible SQLite writes: full = a 2xx survives "
        "power loss; normal = survives process crashes only, ~20x faster enqueue.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (redis backend).")
    max_batch_images: int = Field(4, ge=1, le=64, description="Most images in one batch.")
    batch_window_ms: int = Field(
        10, ge=0, description="How long a worker waits for batch companions."
    )
    lease_seconds: float = Field(30.0, gt=0, description="Lease on a claimed job.")
    max_attempts: int = Field(3, ge=1, description="Attempts before a job is dead-lettered.")
    max_queue_depth: int = Field(10_000, ge=1, description="Queued jobs before 503.")
    workers: int = Field(1, ge=1, description="Worker processes `sdserve serve` runs.")
    poll_interval_ms: int = Field(250, ge=1, description="Fallback poll when no wake-up arrives.")

    # --- API limits ---
    sync_timeout_seconds: float = Field(
        120.0, gt=0, description="How long POST /v1/generate waits."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body.")
    max_pixels: int = Field(
        2048 * 2048, ge=64 * 64, description="Largest width*height of one image."
    )

    # --- storage ---
    images_dir: Path | None = Field(None, description="Image folder (default: <data_dir>/images).")

    # --- webhooks ---
    webhook_secret: str = Field(
        "",
        description="Standard Webhooks secret (whsec_...). Empty = generated once and kept "
        "in <data_dir>/webhook_secret.",
    )
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts/CIDRs webhooks may reach even if private or "
        "loopback (e.g. `127.0.0.1,10.0.0.0/8,hooks.internal`).",
    )
    webhook_timeout_seconds: float = Field(5.0, gt=0, description="Per-delivery timeout.")
    webhook_max_attempts: int = Field(8, ge=1, description="Delivery tries (about a day).")

    @field_validator("webhook_allowlist", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # --- derived paths ---
    @property
    def resolved_database_path(self) -> Path:
        return self.database_path or self.data_dir / "sdserve.db"

    @property
    def resolved_images_dir(self) -> Path:
        return self.images_dir or self.data_dir / "images"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def run_dir(self) -> Path:
        """Sockets and lock files of the embedded deployment."""
        return self.data_dir / "run"
