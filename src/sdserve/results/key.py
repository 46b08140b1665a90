"""The result cache key: everything that decides a job's pixels, and its tenant.

Two jobs share a key only when the same tenant asked the same model revision, with
the same adapters and every parameter (prompts, size, steps, guidance, scheduler, seed,
image count, output format, task parameters) and byte-identical input images. The
priority is left out: it decides when a job runs, not what it draws.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sdserve.domain.requests import JobSpec

# Scheduling and tracing only: never part of what is drawn.
_NOT_DRAWN = {"priority", "image", "mask", "trace"}
KEY_VERSION = 1  # bump when the engine's output for the same key would change


def result_key(
    spec: JobSpec,
    tenant: str | None,
    model_revision: str,
    input_hashes: dict[str, str],
    adapter_revisions: dict[str, str] | None = None,
) -> str:
    """``input_hashes``: sha256 of each stored input (``image``, ``mask``), since input
    ids are random per upload while their bytes are what is drawn from.
    ``adapter_revisions``: a hash of each LoRA adapter's file, so a replaced adapter
    file (same name) misses."""
    drawn: dict[str, Any] = {
        k: v for k, v in spec.model_dump(mode="json").items() if k not in _NOT_DRAWN
    }
    canonical = json.dumps(
        {
            "v": KEY_VERSION,
            "tenant": tenant,
            "revision": model_revision,
            "spec": drawn,
            "inputs": dict(sorted(input_hashes.items())),
            "adapters": dict(sorted((adapter_revisions or {}).items())),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
