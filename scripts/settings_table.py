"""Regenerate the configuration table in README.md from Settings (the one source).

Run: .venv/bin/python scripts/settings_table.py   (a unit test checks it is current)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def table() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from sdserve.config import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if hasattr(default, "get_secret_value"):  # SecretStr: show what it holds by default
            default = default.get_secret_value()
        shown = "(derived)" if default is None else f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `SDSERVE_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    block = f"{START}\n{table()}\n{END}"
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(render(path.read_text()))
