"""Convert a diffusers SD1-layout folder into one original-layout .safetensors file.

    python scripts/convert_to_single_file.py <model folder> <out.safetensors>

Writes the checkpoint and, beside it, ``<stem>.config/``: the folder's configs,
tokenizer and scheduler without weights, which sdserve needs to load the file offline.
The tensor names are those of the original Stable Diffusion code (see
sdserve/engine/singlefile.py); the values are copied bit for bit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def convert(folder: Path, out: Path) -> Path:
    import diffusers
    from safetensors.torch import save_file

    from sdserve.engine.singlefile import to_original

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        str(folder),
        use_safetensors=True,
        local_files_only=True,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(to_original(pipe), str(out), metadata={"format": "pt", "source": folder.name})
    config = out.with_name(out.stem + ".config")
    if config.exists():
        shutil.rmtree(config)
    shutil.copytree(
        folder,
        config,
        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.ckpt", "*.pt", "*.pth"),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    path = convert(args.folder, args.out)
    print(f"wrote {path} and {path.with_name(path.stem + '.config')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
