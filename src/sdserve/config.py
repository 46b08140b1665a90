"""One Settings object; every field is settable as SDSERVE_<NAME>."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sdserve.storage.base import MAX_URL_TTL_SECONDS


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
    log_json: bool = Field(False, description="Emit logs as JSON lines (as log_format=json).")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or JSON with request id, job id and tenant."
    )
    ssl_certfile: Path | None = Field(
        None, description="TLS certificate (PEM) for the API; with ssl_keyfile, serves HTTPS."
    )
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) for the API.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins allowed by CORS "
        "(e.g. `https://app.example.com`); empty = CORS off.",
    )

    # --- security ---
    auth: Literal["on", "off"] = Field(
        "on",
        description="API keys required (on), or one open tenant (off: refused on a "
        "non-loopback address without --insecure). See docs/security.md.",
    )
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="Server secret for image ids and sealed values (>= 32 chars). Empty = "
        "generated once into <data_dir>/secret_key; required with the redis backend.",
    )

    # --- models / engine ---
    model: str = Field(
        "",
        description="Default model: a name under models_dir, a diffusers folder, a "
        ".safetensors file or a hub id. Empty = the demo model (created if absent).",
    )
    models_dir: Path | None = Field(
        None, description="Folder of extra models (default: <data_dir>/models)."
    )
    model_registry: Path | None = Field(
        None,
        description="Registry file (TOML): models, aliases, A/B rollouts, routing rules "
        "(default: <models_dir>/registry.toml when present). Reloaded by SIGHUP or "
        "POST /v1/admin/models/reload.",
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
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default",
        description="torch.compile mode (reduce-overhead: CUDA graphs, for fixed shapes).",
    )
    compile_vae: bool = Field(
        False, description="With torch_compile, also compile the VAE decoder."
    )
    channels_last: bool = Field(
        False, description="UNet and VAE in channels-last memory format (faster convs on GPU)."
    )
    fuse_qkv: bool = Field(
        False, description="Fuse attention Q/K/V projections into one matmul (UNet and VAE)."
    )
    batch_invariant: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Run the UNet in fixed-shape micro-batches (one image's guidance pair) "
        "so batched images are bit-identical to single ones (auto: on for CPU, off for "
        "CUDA where batching throughput wins).",
    )
    upscale_tile_size: int = Field(
        256,
        ge=16,
        description="Largest input side an upscaler processes in one piece; larger inputs "
        "are cut into overlapping tiles blended back together, so memory stays bounded.",
    )
    max_loaded_models: int = Field(1, ge=1, description="Models a worker keeps loaded (LRU).")
    model_memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Weight bytes a worker's loaded models may hold where they compute (GPU "
        "memory on CUDA, RAM on CPU); LRU models leave beyond it. 0 = auto (75% of the "
        "GPU, 50% of RAM on CPU).",
    )
    model_ram_tier_bytes: int | None = Field(
        None,
        ge=0,
        description="Host RAM for models evicted from the GPU, brought back without a disk "
        "load (LRU beyond it leave memory). Unset = 50% of RAM; 0 = off; none on CPU.",
    )
    loras_dir: Path | None = Field(
        None, description="Folder of LoRA adapters, .safetensors files (default: <data_dir>/loras)."
    )
    max_loaded_loras: int = Field(
        8, ge=1, description="LoRA adapters a loaded model keeps attached (LRU)."
    )
    result_cache_ttl_seconds: float = Field(
        0,
        ge=0,
        description="Answer an exact repeat (same tenant, model, adapters, parameters, "
        "seed and inputs) from its stored images for this long; 0 = off.",
    )
    torch_threads: int = Field(
        0, ge=0, description="CPU threads for torch in a worker (0 = torch's default)."
    )
    allow_hub_downloads: bool = Field(False, description="Allow loading a hub id (needs network).")
    inpaint_model: str = Field(
        "",
        description="Model an inpaint request without `model` gets (empty: the packaged "
        "demo-inpaint with the demo model, else the default model).",
    )
    upscale_model: str = Field(
        "",
        description="Model an upscale request without `model` gets (empty: the first "
        "upscaler found).",
    )

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
    redis_prefix: str = Field(
        "sdserve:", description="Prefix of every Redis key, so deployments can share a Redis."
    )
    max_batch_images: int = Field(4, ge=1, le=64, description="Most images in one batch.")
    batch_window_ms: int = Field(
        10, ge=0, description="How long a worker waits for batch companions."
    )
    lease_seconds: float = Field(30.0, gt=0, description="Lease on a claimed job.")
    max_attempts: int = Field(3, ge=1, description="Attempts before a job is dead-lettered.")
    max_queue_depth: int = Field(10_000, ge=1, description="Queued jobs before 503.")
    workers: int = Field(1, ge=1, description="Worker processes `sdserve serve` runs.")
    poll_interval_ms: int = Field(250, ge=1, description="Fallback poll when no wake-up arrives.")
    drain_seconds: float = Field(
        25.0,
        ge=0,
        description="Worker SIGTERM grace: a running batch that will not finish in it is "
        "released at once (not a failed attempt). Keep below the pod's grace period.",
    )
    api_drain_seconds: float = Field(
        10.0,
        ge=0,
        description="API SIGTERM grace: waiting /v1/generate clients get their result or a "
        "503 shutting_down within it.",
    )
    worker_metrics_port: int = Field(
        9100,
        ge=0,
        le=65535,
        description="Worker /healthz, /readyz and /metrics port (generation, queue wait, "
        "model cache, GPU memory); 0 = off. `serve` gives worker i this port + i.",
    )
    engine: Literal["diffusers", "fake"] = Field(
        "diffusers",
        description="Worker engine; fake draws gradients with no model (tests, chaos, "
        "benchmarks of the queue).",
    )
    fake_step_ms: float = Field(
        0.0, ge=0, description="Fake engine: milliseconds slept per denoising step (a GPU)."
    )
    affinity_max_wait_ms: int = Field(
        2000,
        ge=0,
        description="How long a job may be passed over for a same-priority job of a model "
        "the worker already holds (model affinity; 0 = strict FIFO).",
    )

    # --- API limits ---
    sync_timeout_seconds: float = Field(
        120.0, gt=0, description="How long POST /v1/generate waits."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body.")
    max_upload_bytes: int = Field(
        24 * 1024 * 1024,
        ge=1024,
        description="Largest body of the routes that take input images (generate, jobs, "
        "workflows; room for an image and a mask in base64); other routes keep "
        "max_body_bytes.",
    )
    max_input_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest input image or mask file (decoded)."
    )
    max_pixels: int = Field(
        2048 * 2048, ge=64 * 64, description="Largest width*height of one image."
    )
    max_input_pixels: int = Field(
        2048 * 2048, ge=64 * 64, description="Largest width*height of an input image."
    )

    # --- storage ---
    blob_backend: Literal["local", "s3", "memory"] = Field(
        "local", description="Image store: local (folder), s3 (S3-compatible), memory (tests)."
    )
    images_dir: Path | None = Field(None, description="Image folder (default: <data_dir>/images).")
    s3_bucket: str = Field("", description="S3 bucket (required with blob_backend=s3).")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. `sdserve/`.")
    s3_endpoint_url: str = Field(
        "", description="S3-compatible endpoint (MinIO, Ceph, R2); empty = AWS S3."
    )
    s3_public_endpoint_url: str = Field(
        "",
        description="Endpoint named in pre-signed URLs when clients reach S3 by another "
        "address than the service does; empty = s3_endpoint_url.",
    )
    s3_region: str = Field("", description="S3 region; empty = boto3's default (AWS_REGION).")
    s3_create_bucket: bool = Field(
        False, description="Create the bucket at start if missing (else start-up fails)."
    )
    image_urls: Literal["api", "presigned"] = Field(
        "api",
        description="Image links clients get: api (/v1/images/{id}) or presigned "
        "(expiring direct S3 URLs; needs blob_backend=s3).",
    )
    presigned_url_ttl_seconds: int = Field(
        3600, ge=1, le=MAX_URL_TTL_SECONDS, description="Lifetime of a pre-signed image URL."
    )

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

    # --- content safety ---
    prompt_policy: Literal["builtin", "external", "both", "off"] = Field(
        "builtin",
        description="Prompt check at submit: builtin term lists, an external moderation "
        "service, both (built-in first), or off.",
    )
    prompt_policy_threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="A category score at or above this refuses."
    )
    prompt_policy_terms_dir: Path | None = Field(
        None,
        description="Folder of operator term lists (TOML) extending or replacing the "
        "built-in ones (docs/safety.md).",
    )
    moderation_url: str = Field(
        "", description="External moderation endpoint (OpenAI moderation request/response)."
    )
    moderation_api_key: str = Field("", description="Bearer token for the moderation service.")
    moderation_model: str = Field("", description="`model` sent to the moderation service.")
    moderation_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of one moderation request."
    )
    moderation_fail_open: bool = Field(
        False,
        description="Approve prompts when the moderation service fails (default: refuse "
        "with 503 moderation_unavailable).",
    )
    preview_every_s: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Live previews of running jobs (A1111 /sdapi/v1/progress `current_image`): "
        "at most one per job this many seconds apart, from the latents without a VAE decode "
        "(SD 4-channel latents only). 0: off. Never made while an image checker is on.",
    )
    image_checker: Literal["off", "model", "nudenet"] = Field(
        "off",
        description="Check generated images: the checkpoint's own safety_checker, NudeNet "
        "(extra `sdserve[nudenet]`, AGPL-3.0), or off.",
    )
    image_checker_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="NudeNet detection score that flags an image."
    )
    safety_review: Literal["hold", "reject"] = Field(
        "hold",
        description="A flagged image: hold the job for review, or reject (fail) it.",
    )
    safety_record_prompts: bool = Field(
        False,
        description="Keep the text of refused prompts in the safety record (default: only "
        "a SHA-256 and the length, for retention policies that forbid keeping them).",
    )

    # --- quotas (security/ratelimit.py; "N/second|minute|hour|day", empty = unlimited) ---
    quota_requests: str = Field(
        "", description="Generation requests per API key, e.g. '60/minute' (empty: no limit)."
    )
    quota_images: str = Field(
        "", description="Images generated per API key, e.g. '1000/day' (empty: no limit)."
    )
    quota_max_queued: int = Field(
        0, ge=0, description="Jobs a tenant may have queued or running at once (0: no limit)."
    )
    quota_max_pixels: int = Field(
        0, ge=0, description="Largest width*height a key may ask for (0: only max_pixels)."
    )
    quota_max_steps: int = Field(
        0, ge=0, description="Most inference steps a key may ask for (0: no extra limit)."
    )
    quota_overrides: dict[str, dict[str, str | int]] = Field(
        default_factory=dict,
        description='Per tenant or key quotas over the defaults, JSON: {"tenant:acme": '
        '{"requests": "600/minute", "max_queued": 20}, "key:<id>": {"images": "10/day"}}.',
    )

    # --- retention (security/retention.py; 0 = keep forever) ---
    retention_audit_seconds: int = Field(
        0, ge=0, description="Audit entries older than this are pruned by the sweeper (0: kept)."
    )
    retention_prompts_seconds: int = Field(
        0, ge=0, description="Prompts of finished jobs are blanked after this (0: kept)."
    )
    retention_jobs_seconds: int = Field(
        0,
        ge=0,
        description="Finished jobs are deleted after this, with their images and inputs (0: kept).",
    )
    retention_images_seconds: int = Field(
        0,
        ge=0,
        description="Images (outputs and inputs) of finished jobs are deleted after this; "
        "the job is kept, its images shown as expired (0: kept).",
    )
    retention_overrides: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='Per-tenant TTLs over the defaults, JSON: {"acme": {"jobs": 86400, '
        '"prompts": 3600, "images": 604800}} (0: kept).',
    )
    retention_sweep_interval_seconds: float = Field(
        300.0, gt=0, description="How often the API process runs the retention sweeper."
    )

    @field_validator("webhook_allowlist", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _storage_consistent(self) -> Settings:
        # One clear message at start-up instead of a failure at the first image.
        if self.blob_backend == "s3" and not self.s3_bucket:
            raise ValueError("SDSERVE_S3_BUCKET is required when SDSERVE_BLOB_BACKEND=s3")
        if self.image_urls == "presigned" and self.blob_backend != "s3":
            raise ValueError(
                "SDSERVE_IMAGE_URLS=presigned needs SDSERVE_BLOB_BACKEND=s3 "
                f"(it is {self.blob_backend!r}, whose images are served by the API)"
            )
        return self

    @property
    def json_logs(self) -> bool:
        return self.log_json or self.log_format == "json"

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
    def resolved_loras_dir(self) -> Path:
        return self.loras_dir or self.data_dir / "loras"

    @property
    def run_dir(self) -> Path:
        """Sockets and lock files of the embedded deployment."""
        return self.data_dir / "run"
