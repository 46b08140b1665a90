"""The registry file (TOML): models, aliases, A/B rollouts and routing rules.

```toml
[models.photo-v1]
source = "photo-v1"            # folder or .safetensors, relative to this file; or
# hub = "org/name"             # a hub id (served only with SDSERVE_ALLOW_HUB_DOWNLOADS)
config = "photo-v1.config"     # single-file checkpoints: their diffusers config folder
family = "sd1"                 # optional: detected from the weights when absent
dtype = "float16"              # optional: the deployment's dtype when absent
scheduler = "dpmpp_2m"         # optional default scheduler
width = 512                    # optional default size
height = 512
aliases = ["photo-stable"]

[rollouts.photo]               # "photo" picks photo-v1 90%, photo-v2 10%
versions = { photo-v1 = 90, photo-v2 = 10 }

[[routes]]                     # first match wins; a request may opt out
name = "small-drafts"
to = "tiny"
from = ["photo"]               # requested model or alias (absent: any)
max_pixels = 262144
max_steps = 20
max_prompt_chars = 200
priority = ["low"]
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sdserve.domain import limits

Family = Literal["sd1", "sd2", "sdxl", "inpaint", "upscaler", "latent-upscaler"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    hub: str | None = None
    config: str | None = None
    family: Family | None = None
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    scheduler: str | None = None
    width: int | None = Field(None, ge=limits.MIN_SIDE, le=limits.MAX_SIDE)
    height: int | None = Field(None, ge=limits.MIN_SIDE, le=limits.MAX_SIDE)
    aliases: list[str] = Field(default_factory=list)
    revision: str | None = Field(None, max_length=64)  # hub ids: the revision to pin

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if (self.source is None) == (self.hub is None):
            raise ValueError("give exactly one of source (a path) or hub (a hub id)")
        if self.scheduler is not None and self.scheduler not in limits.SCHEDULER_NAMES:
            raise ValueError(f"unknown scheduler {self.scheduler!r}")
        return self


class RolloutEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    versions: dict[str, float] = Field(min_length=1)
    sticky: bool = True  # per API key or `user`; false: every request draws anew

    @model_validator(mode="after")
    def _weights(self) -> RolloutEntry:
        if any(w < 0 for w in self.versions.values()) or sum(self.versions.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all 0")
        return self


class RouteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=_NAME)
    to: str
    from_: list[str] = Field(default_factory=list, alias="from")
    max_pixels: int | None = Field(None, ge=1)
    min_pixels: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    min_steps: int | None = Field(None, ge=1)
    max_prompt_chars: int | None = Field(None, ge=0)
    min_prompt_chars: int | None = Field(None, ge=0)
    priority: list[Literal["high", "normal", "low"]] = Field(default_factory=list)


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelEntry] = Field(default_factory=dict)
    rollouts: dict[str, RolloutEntry] = Field(default_factory=dict)
    routes: list[RouteEntry] = Field(default_factory=list)


class RegistryError(ValueError):
    """The registry file cannot be used; the message names the file and the field."""


def read_registry(path: Path) -> RegistryFile:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"{path}: {exc}") from exc
    try:
        return RegistryFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RegistryError(f"{path}: {problems}") from exc


def resolve_source(registry_path: Path, source: str) -> str:
    """A source path as given, relative ones against the registry file's folder."""
    p = Path(source).expanduser()
    return str(p if p.is_absolute() else registry_path.parent / p)
