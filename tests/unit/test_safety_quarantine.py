"""The quarantine: sealed (AES-GCM) under a hidden id, opened only with the same key
and for the same image id; release and delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdserve.safety.quarantine import Quarantine, QuarantineError
from sdserve.storage.local import LocalBlobStore

IMAGE = "0123456789abcdef0123456789abcdef.png"
OTHER = "fedcba9876543210fedcba9876543210.png"
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 50


def test_sealed_under_a_hidden_id_then_released(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    q = Quarantine(blobs, b"k" * 32)
    q.put(IMAGE, PNG, "acme")
    hidden = q.hidden_id(IMAGE)
    assert hidden != IMAGE and hidden.endswith(".png")
    sealed = blobs.get(hidden, tenant="acme")
    assert sealed is not None and PNG not in sealed and b"pixels" not in sealed
    assert blobs.get(IMAGE, tenant="acme") is None  # nothing under the public id
    assert q.holds(IMAGE, "acme") and q.open(IMAGE, "acme") == PNG
    assert q.release(IMAGE, "acme")
    assert blobs.get(IMAGE, tenant="acme") == PNG and not q.holds(IMAGE, "acme")
    assert q.release(IMAGE, "acme") is False


def test_other_key_or_swapped_blob_does_not_open(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    q = Quarantine(blobs, b"k" * 32)
    q.put(IMAGE, PNG, None)
    q.put(OTHER, b"other", None)
    # Another secret key: different hidden ids, and the sealed bytes do not open.
    stranger = Quarantine(blobs, b"x" * 32)
    assert stranger.hidden_id(IMAGE) != q.hidden_id(IMAGE)
    blobs.put(stranger.hidden_id(IMAGE), blobs.get(q.hidden_id(IMAGE)) or b"")
    with pytest.raises(QuarantineError):
        stranger.open(IMAGE, None)
    # One image's sealed bytes stored as another's: the id is authenticated.
    blobs.put(q.hidden_id(OTHER), blobs.get(q.hidden_id(IMAGE)) or b"")
    with pytest.raises(QuarantineError):
        q.open(OTHER, None)
    assert q.delete(IMAGE, None) and not q.holds(IMAGE, None)
