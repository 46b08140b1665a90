"""Build the catalog from the registry file, the models folder and the packaged
models, with revisions; the builder is kept so the catalog can reload in place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sdserve.domain.errors import UnsafeWeights
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import (
    FAMILY_SIZE,
    Catalog,
    describe,
    describe_checkpoint,
    scan_folder,
)
from sdserve.models.registry_file import (
    ModelEntry,
    RegistryError,
    RegistryFile,
    read_registry,
    resolve_source,
)
from sdserve.models.revision import RevisionCache
from sdserve.models.rollout import Rollout
from sdserve.models.routing import RouteRule

log = logging.getLogger("sdserve.models")


def registry_entry(name: str, entry: ModelEntry, registry_path: Path) -> ModelInfo:
    """A registry entry as a ModelInfo: detected from its weights, then the entry's
    own fields (family, size, scheduler, dtype) on top."""
    source = entry.hub or resolve_source(registry_path, entry.source or "")
    config = Path(resolve_source(registry_path, entry.config)) if entry.config else None
    if config is not None and source.endswith(".safetensors") and Path(source).is_file():
        info = describe_checkpoint(name, Path(source), config)
    else:
        info = describe(name, source)
    family = entry.family or info.family
    width = entry.width or info.default_width
    height = entry.height or info.default_height
    if entry.family and not entry.width and info.family == "unknown":
        width = height = FAMILY_SIZE[family]  # a hub id: the family's native size
    return replace(
        info,
        family=family,
        default_width=width,
        default_height=height,
        default_scheduler=entry.scheduler or info.default_scheduler,
        aliases=tuple(entry.aliases),
        dtype=entry.dtype,
        config=str(config) if config is not None else info.config,
        revision=entry.revision or "",
    )


def _check_names(reg: RegistryFile, models: dict[str, ModelInfo], path: Path) -> None:
    """Every alias, rollout version and routing target names a model; names never
    collide (an alias that shadows a model would make routing ambiguous)."""
    aliases = {a for m in models.values() for a in m.aliases}
    taken = set(models)
    for alias in aliases | set(reg.rollouts):
        if alias in taken:
            raise RegistryError(f"{path}: {alias!r} is both a model and an alias or rollout")
    for alias, ro in reg.rollouts.items():
        for version in ro.versions:
            if version not in models:
                raise RegistryError(f"{path}: rollouts.{alias}: unknown model {version!r}")
    for rule in reg.routes:
        if rule.to not in models:
            raise RegistryError(f"{path}: routes.{rule.name}: unknown model {rule.to!r}")


def build_catalog_from(
    default: ModelInfo,
    models_dir: Path,
    builtin: list[ModelInfo],
    registry_path: Path | None,
    revisions: RevisionCache,
    allow_hub: bool,
    default_name: str = "",
) -> Catalog:
    """Registry entries first (they win a name), then the models folder, then the
    packaged models; the default is ``default_name`` when the registry or folder has
    it (a name or alias), else ``default``."""
    reg = read_registry(registry_path) if registry_path is not None else RegistryFile()
    models: dict[str, ModelInfo] = {}
    for name, entry in reg.models.items():
        if entry.hub is not None and not allow_hub:
            log.warning("model %s: hub id %s skipped (hub downloads are off)", name, entry.hub)
            continue
        try:
            models[name] = registry_entry(name, entry, registry_path or Path("."))
        except (OSError, ValueError, UnsafeWeights) as exc:
            raise RegistryError(f"{registry_path}: models.{name}: {exc}") from exc
    named = {a for e in reg.models.values() for a in e.aliases}
    # A default named by alias is the registry's model, not a hub id of that name.
    fallback = [] if default.name in named else [default]
    found, broken = scan_folder(models_dir)
    for info in [*found, *fallback, *builtin]:
        models.setdefault(info.name, info)
    _check_names(reg, models, registry_path or Path("."))
    for name, info in models.items():
        if not info.revision:
            models[name] = replace(info, revision=revisions.revision(info.source))
    revisions.save()
    aliases = {a: m.name for m in models.values() for a in m.aliases}
    first = (
        models.get(aliases.get(default_name, default_name))
        or models.get(default.name)
        or next(iter(models.values()))
    )
    rollouts = {
        alias: Rollout(alias, tuple(ro.versions.items()), ro.sticky)
        for alias, ro in reg.rollouts.items()
    }
    rules = tuple(
        RouteRule(
            name=r.name,
            to=r.to,
            from_models=tuple(r.from_),
            max_pixels=r.max_pixels,
            min_pixels=r.min_pixels,
            max_steps=r.max_steps,
            min_steps=r.min_steps,
            max_prompt_chars=r.max_prompt_chars,
            min_prompt_chars=r.min_prompt_chars,
            priorities=tuple(r.priority),
        )
        for r in reg.routes
    )
    broken = {k: v for k, v in broken.items() if k not in models}
    return Catalog(first, list(models.values()), broken, rollouts=rollouts, rules=rules)


def reloadable(build: Callable[[], Catalog]) -> Catalog:
    """The catalog ``build`` makes, able to reload itself by calling it again."""
    catalog = build()
    catalog._builder = build
    return catalog
