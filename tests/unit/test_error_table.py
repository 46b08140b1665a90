"""One table decides every error status: each error class's type is in it, and
docs/errors.md lists every row."""

from __future__ import annotations

import ast
from pathlib import Path

from sdserve.domain.errors import (
    ERRORS,
    InvalidRequest,
    NotFound,
    SdserveError,
    UnsafeWeights,
    status_for,
)

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "sdserve"


def _error_class_types() -> dict[str, str]:
    """Class name -> its ``type`` for every SdserveError subclass in the source tree,
    read statically so no module (torch, diffusers) has to be imported."""
    bases: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "type" for t in stmt.targets)
                    and isinstance(stmt.value, ast.Constant)
                ):
                    types[node.name] = str(stmt.value.value)

    def derives(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "SdserveError":
            return True
        return any(derives(b, seen | {name}) for b in bases.get(name, []) if b not in seen)

    return {name: t for name, t in types.items() if derives(name)}


def test_every_error_class_type_is_in_the_table() -> None:
    found = _error_class_types()
    assert len(found) >= 25  # the scan really sees the hierarchy
    missing = {name: t for name, t in found.items() if t not in ERRORS}
    assert not missing, f"add these error types to domain.errors.ERRORS: {missing}"


def test_every_imported_subclass_is_in_the_table() -> None:
    def walk(cls: type[SdserveError]) -> list[type[SdserveError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    for cls in walk(SdserveError):
        assert cls.type in ERRORS, cls


def test_status_comes_from_the_table() -> None:
    assert InvalidRequest.single("width", "bad").status == 422
    assert NotFound("x").status == 404
    assert UnsafeWeights("x.ckpt").status == 422  # a refused checkpoint is not a 500
    assert status_for("no_such_type") == 500
    assert not any("status" in vars(cls) for cls in (InvalidRequest, NotFound, UnsafeWeights))


def test_docs_list_every_type_with_its_status() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    for err_type, (status, _meaning) in ERRORS.items():
        assert f"| `{err_type}` | {status} |" in doc, err_type
