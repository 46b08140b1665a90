"""The `sdserve` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sdserve.cli_audit import audit_app
from sdserve.cli_keys import keys_app, tenants_app

if TYPE_CHECKING:
    from sdserve.config import Settings

app = typer.Typer(
    help="sdserve: self-hosted Stable Diffusion image generation.", no_args_is_help=True
)
models_app = typer.Typer(help="Create, train and list models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
jobs_app = typer.Typer(help="Inspect the job store (operators).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(audit_app, name="audit")


def _settings(**overrides: object) -> Settings:

    # Command-line options win over the environment; pass them on as env so that
    # child processes (workers) see the same values.
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"SDSERVE_{key.upper()}"] = str(value)
    from sdserve.startup import load_settings

    return load_settings()  # an invalid setting: one line, exit 2


_INSECURE = typer.Option(
    "--insecure", help="Allow SDSERVE_AUTH=off on a non-loopback address (no keys: anyone in)"
)


def _refuse_open_exposure(settings: Settings, insecure: bool) -> None:
    from sdserve.security.bootstrap import exposure_problem

    problem = exposure_problem(settings, insecure)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env SDSERVE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env SDSERVE_PORT]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env SDSERVE_DATA_DIR]")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Default model: folder, .safetensors or name [env SDSERVE_MODEL]"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes [env SDSERVE_WORKERS]")
    ] = None,
    insecure: Annotated[bool, _INSECURE] = False,
) -> None:
    """Run the embedded service: API + supervised workers, SQLite + local files."""
    from sdserve.observability.logs import configure_logging
    from sdserve.startup import check_or_exit
    from sdserve.supervisor import serve as run_serve

    settings = _settings(host=host, port=port, data_dir=data_dir, model=model, workers=workers)
    _refuse_open_exposure(settings, insecure)
    configure_logging(settings.log_level, settings.json_logs)
    check_or_exit(settings)
    run_serve(settings)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address [env SDSERVE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env SDSERVE_PORT]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env SDSERVE_DATA_DIR]")
    ] = None,
    insecure: Annotated[bool, _INSECURE] = False,
) -> None:
    """Run only the API; workers run separately as `sdserve worker`."""
    from sdserve.observability.logs import configure_logging
    from sdserve.startup import check_or_exit
    from sdserve.supervisor import api_only

    settings = _settings(host=host, port=port, data_dir=data_dir)
    _refuse_open_exposure(settings, insecure)
    configure_logging(settings.log_level, settings.json_logs)
    check_or_exit(settings)
    api_only(settings)


@app.command()
def worker(
    embedded: Annotated[
        bool, typer.Option(help="Started by `serve`: exit when the parent exits.")
    ] = False,
) -> None:
    """Run one GPU worker that drains the configured queue."""
    from sdserve.observability.logs import configure_logging
    from sdserve.startup import check_worker_or_exit
    from sdserve.supervisor import worker_main

    settings = _settings()
    configure_logging(settings.log_level, settings.json_logs)
    check_worker_or_exit(settings)
    worker_main(settings, embedded)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw")],
    out: Annotated[Path, typer.Option(help="Folder for the images")] = Path("."),
    url: Annotated[str, typer.Option(envvar="SDSERVE_URL", help="Service URL")] = (
        "http://127.0.0.1:8000"
    ),
    seed: Annotated[int | None, typer.Option(help="Seed (random if absent)")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps")] = 20,
    num_images: Annotated[int, typer.Option(help="Images to make")] = 1,
    width: Annotated[int | None, typer.Option(help="Width (model default if absent)")] = None,
    height: Annotated[int | None, typer.Option(help="Height")] = None,
    scheduler: Annotated[str, typer.Option(help="Scheduler name")] = "euler_a",
    model: Annotated[str | None, typer.Option(help="Model name")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="SDSERVE_API_KEY", help="API key (sk-...)")
    ] = None,
    progress: Annotated[
        bool, typer.Option(help="Show the queue position, then the steps, on stderr")
    ] = True,
    wait_timeout: Annotated[float, typer.Option(help="Seconds to wait for the job")] = 600.0,
) -> None:
    """Ask a running service for images and save them (client side, no torch): shows
    the queue position, then the steps, and prints each file with its seed."""
    import sys

    from sdserve.client import Client, SdserveClientError
    from sdserve.client.progress import ProgressLine

    params = {
        "seed": seed,
        "num_inference_steps": steps,
        "num_images": num_images,
        "width": width,
        "height": height,
        "scheduler": scheduler,
        "model": model,
    }
    body: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    bar = ProgressLine(sys.stderr) if progress else None
    try:
        with Client(url, api_key=api_key) as client:
            job = client.submit(prompt, **body)
            try:
                done = client.wait(job["id"], timeout=wait_timeout, on_update=bar)
            finally:
                if bar is not None:
                    bar.close()
            if done["status"] != "succeeded":
                err = done.get("error") or {}
                typer.echo(f"error: job {done['status']}: {err.get('message', '')}", err=True)
                raise typer.Exit(1)
            out.mkdir(parents=True, exist_ok=True)
            fmt = done["parameters"]["output_format"]
            for image in done["result"]["images"]:
                path = out / f"{done['id']}-{image['seed']}.{fmt}"
                path.write_bytes(client.image(image["url"]))
                typer.echo(f"{path}\tseed {image['seed']}")
    except SdserveClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for warning in done["result"]["warnings"]:
        typer.echo(f"warning: {warning}", err=True)


@models_app.command("create-demo")
def create_demo(
    path: Annotated[Path, typer.Argument(help="Folder to write the tiny model to")],
    seed: Annotated[int, typer.Option(help="Weights seed")] = 0,
) -> None:
    """Write the tiny random-weight SD model (fast; draws noise, for speed tests)."""
    from sdserve.engine.demo import create_demo_model

    create_demo_model(path, seed=seed)
    typer.echo(f"demo model written to {path}")


@models_app.command("train-demo")
def train_demo(
    path: Annotated[Path, typer.Argument(help="Folder to write the trained model to")],
    seed: Annotated[int, typer.Option(help="Training seed (fixed: reruns match)")] = 0,
) -> None:
    """Train the shape-drawing demo model from scratch on this machine's CPU
    (about half an hour on 2 cores; see docs/demo-model.md)."""
    from sdserve.engine.process_env import prepare_engine_env

    prepare_engine_env()
    from sdserve.training.txt2img import train_demo_model

    train_demo_model(path, seed=seed)
    typer.echo(f"demo model written to {path}")


@models_app.command("list")
def list_models() -> None:
    """List the models this configuration serves."""
    from sdserve.wiring import build_catalog

    catalog = build_catalog(_settings())
    for info in catalog.all():
        mark = "*" if info.name == catalog.default.name else " "
        aliases = f"\t(aliases: {', '.join(info.aliases)})" if info.aliases else ""
        typer.echo(
            f"{mark} {info.name}\t{info.family}\t{info.default_width}x"
            f"{info.default_height}\t{info.revision or '-'}\t{info.source}{aliases}"
        )
    for rollout in catalog.rollouts().values():
        shares = ", ".join(f"{k} {v:.0%}" for k, v in rollout.shares().items())
        typer.echo(f"  rollout {rollout.alias}: {shares}")
    for rule in catalog.rules:
        typer.echo(f"  route {rule.name} -> {rule.to}")


@jobs_app.command("stats")
def jobs_stats() -> None:
    """Queue depth by priority, running jobs, dead letters."""
    from sdserve.queue.factory import build_queue

    queue = build_queue(_settings())
    s = queue.stats()
    typer.echo(f"queued: {s.queued}  running: {s.running}  dead letters: {s.dead_letters}")
    queue.close()


@jobs_app.command("dead-letters")
def dead_letters(limit: Annotated[int, typer.Option(help="Most to list")] = 50) -> None:
    """Jobs that failed after their last attempt, with the reason."""
    from sdserve.queue.factory import build_queue

    queue = build_queue(_settings())
    for job in queue.dead_letters(limit):
        reason = f"{job.error.type}: {job.error.message}" if job.error else "?"
        typer.echo(f"{job.id}\tattempts={job.attempts}\t{reason}")
    queue.close()


@jobs_app.command("requeue")
def requeue(job_id: Annotated[str, typer.Argument(help="A dead-lettered job id")]) -> None:
    """Give a dead-lettered job a fresh set of attempts."""
    from sdserve.domain.errors import SdserveError
    from sdserve.queue.factory import build_queue

    queue = build_queue(_settings())
    try:
        job = queue.requeue_dead_letter(job_id)
    except SdserveError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        queue.close()
    typer.echo(f"{job.id} is {job.status.value} again")


@jobs_app.command("redrive")
def redrive(job_id: Annotated[str, typer.Argument(help="A dead-lettered job id")]) -> None:
    """Same as `requeue`: give a dead-lettered job a fresh set of attempts."""
    requeue(job_id)


@jobs_app.command("inspect")
def inspect_job(job_id: Annotated[str, typer.Argument(help="A job id")]) -> None:
    """A job as stored (JSON): status, attempts, error, request — for a dead letter."""
    import json

    from sdserve.queue.factory import build_queue

    queue = build_queue(_settings())
    try:
        job = queue.get(job_id)
    finally:
        queue.close()
    if job is None:
        typer.echo(f"error: job {job_id} not found", err=True)
        raise typer.Exit(1)
    view = job.model_dump(mode="json", exclude={"request_hash"})
    typer.echo(json.dumps(view, indent=2, sort_keys=True))


@jobs_app.command("purge")
def purge(
    job_id: Annotated[str | None, typer.Argument(help="A dead-lettered job id")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Purge every dead letter")] = False,
) -> None:
    """Take dead letters off the list (the jobs stay failed in the history)."""
    from sdserve.domain.errors import SdserveError
    from sdserve.queue.factory import build_queue

    if (job_id is None) == (not all_):
        typer.echo("error: give a job id or --all (not both)", err=True)
        raise typer.Exit(2)
    queue = build_queue(_settings())
    try:
        ids = [job_id] if job_id else [j.id for j in queue.dead_letters(1_000_000)]
        for ident in ids:
            queue.purge_dead_letter(ident)
    except SdserveError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        queue.close()
    typer.echo(f"purged {len(ids)} dead letter(s)")


def main() -> None:
    app()
