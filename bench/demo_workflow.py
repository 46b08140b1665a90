"""The README's editing example on the shipped demo models, through a real service.

Starts ``sdserve serve`` (SQLite, auth off, the packaged demo model with its
companions demo-inpaint and demo-upscaler), submits one workflow

    txt2img "empty room"  ->  inpaint "a yellow square ..." into the right half  ->  upscale x4

with POST /v1/workflows, polls GET /v1/workflows/{id} until it finishes, downloads every
step's image and writes a strip (txt2img, mask, inpaint, upscale; the 64x64 ones shown
4x with nearest-neighbour so pixels stay visible) to docs/demo_workflow.png. Prints
the request body and the final view.

    python -m bench.demo_workflow [--out docs/demo_workflow.png] [--seed 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from sdserve.testing import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
SIDE = 64


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (SIDE, SIDE), 0)
    mask.paste(255, (SIDE // 2, 0, SIDE, SIDE))
    return mask


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def workflow_body(seed: int, background: str) -> dict[str, Any]:
    return {
        "steps": [
            {"prompt": "empty room", "seed": seed},
            {
                "task": "inpaint",
                "prompt": f"a yellow square on a {background} background",
                "mask": png_b64(right_half_mask()),
                "seed": seed,
            },
            {"task": "upscale", "seed": seed},
        ]
    }


def run(c: httpx.Client, body: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    r = c.post("/v1/workflows", json=body)
    r.raise_for_status()
    wf_id = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, Any] = c.get(f"/v1/workflows/{wf_id}").json()
        if view["status"] in ("succeeded", "failed", "canceled"):
            return view
        time.sleep(0.5)
    raise TimeoutError(f"workflow {wf_id} still running after {timeout}s")


def step_image(c: httpx.Client, view: dict[str, Any], index: int) -> Image.Image:
    url = view["steps"][index]["result"]["images"][0]["url"]
    return Image.open(io.BytesIO(c.get(url).content)).convert("RGB")


def strip(images: list[tuple[str, Image.Image]]) -> Image.Image:
    side, pad, label = 256, 8, 18
    out = Image.new("RGB", (len(images) * (side + pad) + pad, side + label + pad), "white")
    draw = ImageDraw.Draw(out)
    for i, (title, im) in enumerate(images):
        if im.size != (side, side):
            im = im.resize((side, side), Image.Resampling.NEAREST)
        x = pad + i * (side + pad)
        out.paste(im.convert("RGB"), (x, label))
        # an outline, so the mask's white half shows against the page
        draw.rectangle((x - 1, label - 1, x + side, label + side), outline="gray")
        draw.text((x, 3), title, fill="black")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "demo_workflow.png")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sdserve-demo-workflow-")) / "data"
    proc = ServeProcess(data, batch_window_ms="0")
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=120) as c:
            # The room's colour decides the prompt's background word: first see it.
            from sdserve.training.scenes import read_image

            first = c.post("/v1/generate", json={"prompt": "empty room", "seed": args.seed})
            first.raise_for_status()
            room = Image.open(io.BytesIO(base64.b64decode(first.json()["images"][0])))
            background = read_image(room).background
            body = workflow_body(args.seed, background)
            shown = json.loads(json.dumps(body))
            shown["steps"][1]["mask"] = "<base64 PNG: 64x64, right half white>"
            print("POST /v1/workflows", json.dumps(shown, indent=2))
            t0 = time.perf_counter()
            view = run(c, body)
            print(f"workflow {view['id']} {view['status']} in {time.perf_counter() - t0:.1f}s")
            if view["status"] != "succeeded":
                raise SystemExit(json.dumps(view, indent=2))
            images = [step_image(c, view, i) for i in range(3)]
    finally:
        proc.stop()
    final = images[2]
    print(
        "txt2img",
        images[0].size,
        read_image(images[0]),
        "\ninpaint",
        images[1].size,
        read_image(images[1].crop((SIDE // 2, 0, SIDE, SIDE))),
        "\nupscale",
        final.size,
    )
    picture = strip(
        [
            ('1 txt2img "empty room"', images[0]),
            ("mask (white = repaint)", right_half_mask()),
            ('2 inpaint "a yellow square"', images[1]),
            ("3 upscale x4 (256x256)", final),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
