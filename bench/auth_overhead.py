"""What an API key costs per request: GET /v1/jobs/{id} with auth off vs on.

`sdserve api` (SQLite, no workers: the job stays queued) runs once per mode, side by
side; requests alternate between them, so machine load weighs on both alike. With
auth on every request looks its key up in the SQLite key store and checks its hash.
Prints per-request latency (median, p95) per mode and the on/off ratio.
Usage: python -m bench.auth_overhead [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from sdserve.testing import ServeProcess


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the API never answered")


def start(auth: str) -> tuple[ServeProcess, httpx.Client, str]:
    data = Path(tempfile.mkdtemp()) / "data"
    proc = ServeProcess(data, command="api", auth=auth, log_level="WARNING")
    _wait_up(proc.url)
    headers = {}
    if auth == "on":
        headers["Authorization"] = "Bearer " + (data / "admin_key").read_text().strip()
    client = httpx.Client(base_url=proc.url, headers=headers, timeout=30)
    job = client.post("/v1/jobs", json={"prompt": "x"}).json()["id"]
    return proc, client, f"/v1/jobs/{job}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    servers = {mode: start(mode) for mode in ("off", "on")}
    results: dict[str, list[float]] = {mode: [] for mode in servers}
    try:
        # Interleaved, one request to each in turn: load on the machine hits both alike.
        for i in range(args.n + 100):
            for mode, (_, client, path) in servers.items():
                t0 = time.perf_counter()
                r = client.get(path)
                elapsed = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                if i >= 100:  # warm-up
                    results[mode].append(elapsed)
    finally:
        for proc, client, _ in servers.values():
            client.close()
            proc.stop()
    for mode, times in results.items():
        ms = sorted(t * 1000 for t in times)
        print(
            f"auth {mode:3}: median {statistics.median(ms):.2f} ms  "
            f"p95 {ms[int(len(ms) * 0.95)]:.2f} ms  ({len(ms)} GET /v1/jobs/{{id}})"
        )
    ratio = statistics.median(results["on"]) / statistics.median(results["off"])
    print(f"auth on / off (median latency): {ratio:.2f}x")


if __name__ == "__main__":
    main()
