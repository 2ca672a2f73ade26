"""Stills: classify JPEGs from their DCT coefficients (``snapshots classify``) and train the
classifier (``snapshots train``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from consumers.cli.app import Bootstrap, app, console, health_endpoints, out, progress, settings
from schemas.errors import UsageError

snapshots_app = typer.Typer(help="Screen platform stills (JPEG) straight from their DCT coefficients.",
                            no_args_is_help=True)  # fmt: skip
app.add_typer(snapshots_app, name="snapshots")
SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


@snapshots_app.command()
def classify(
    path: Annotated[Path, typer.Argument(help="a JPEG file, or a folder of them")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per still")] = False,
    model_dir: Annotated[
        Path | None, typer.Option(help="the classifier's folder (default: the shipped one)")
    ] = None,
) -> None:
    """Scene class and risk cues of each still, read from its DCT coefficients (no pixel decode).

    A file that is not a complete, supported JPEG is a one-line error (exit code 2); in a folder it
    is reported and the other stills are still classified."""
    from models.errors import JpegError
    from models.snapshot.fold import for_inference
    from models.snapshot.net import load_snapshot
    from streaming.screening import classify_jpeg

    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{path}: no JPEG files in it ({', '.join(SUFFIXES)})")
    from models.registry import SHIPPED

    net = for_inference(load_snapshot(model_dir or SHIPPED)[0])
    bad = 0
    for f in files:
        try:
            verdict = {"file": str(f), **classify_jpeg(net, f.read_bytes())}
        except (JpegError, OSError) as e:
            if not path.is_dir():
                raise UsageError(f"{f}: {e}") from None
            bad += 1
            verdict = {"file": str(f), "error": str(e)}
        if as_json:
            print(json.dumps(verdict))
        elif "error" in verdict:
            console.print(f"[red]{f.name}[/]: {verdict['error']}")
        else:
            cues = ", ".join(f"{k} {v:.2f}" for k, v in verdict["cues"].items())  # type: ignore[attr-defined]
            out.print(f"{f.name}: {verdict['scene']} ({verdict['scene_p']:.2f}); {cues}")
    if bad:
        console.print(f"{bad} of {len(files)} stills could not be read")


@snapshots_app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out", help="where snapshot.pt and its card go")] = Path(
        "models/weights"
    ),
    train_seeds: Annotated[int, typer.Option(min=2, help="synthetic streams to take stills from")] = 240,
    per_stream: Annotated[int, typer.Option(min=1, max=100, help="stills per synthetic stream")] = 6,
    epochs: Annotated[int, typer.Option(min=1, max=200)] = 8,
    seed: Annotated[int, typer.Option()] = 0,
    kind: Annotated[
        str,
        typer.Option(help="dct (the classifier) or rgb (the pixel-domain baseline it is measured against)"),
    ] = "dct",
    width: Annotated[
        int, typer.Option(min=4, max=128, help="the network's width (its cost grows as the square)")
    ] = 16,
    coefficients: Annotated[
        int, typer.Option(min=1, max=64, help="DCT coefficients kept per block, lowest frequencies first")
    ] = 16,
    teacher: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=10.0,
            help="weight of the RGB teacher's distillation (0: labels only, "
            "the shipped recipe; see the README for what 0.5 measured)",
        ),
    ] = 0.0,
    cosine: Annotated[
        bool, typer.Option("--cosine/--constant-lr", help="lower the learning rate by a half cosine")
    ] = False,
    ema: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9999,
            help="keep a moving average of the weights with this decay "
            "(0: the last step's weights, the shipped recipe)",
        ),
    ] = 0.0,
) -> None:
    """Train the still classifier on labelled synthetic stills; score it on held-out synthetic
    stills and on real photographs the training never sees; write the checkpoint and card."""
    from streaming.offline.stills import train_snapshot

    if kind not in ("dct", "rgb"):
        raise UsageError(f"--kind {kind}: dct or rgb")

    with progress() as prog:
        task = prog.add_task("training the still classifier", total=epochs)
        card = train_snapshot(out_dir, list(range(1, train_seeds + 1)), per_stream, epochs, seed,
                              lambda i, n: prog.update(task, completed=i), width, kind,
                              coefficients, teacher, cosine, ema)  # fmt: skip
    for split in ("synthetic_held_out", "real_held_out"):
        m = card["metrics"][split]  # type: ignore[index]
        out.print(
            f"{split}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k != "n") + f" (n={m['n']})"
        )
    out.print(f"checkpoint {out_dir / 'snapshot.pt'} (sha256 {str(card['sha256'])[:12]}…)")


@snapshots_app.command()
def serve(
    bootstrap: Bootstrap = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="the classifier's folder (default: the shipped one)")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Prometheus/health port (default GOPWATCH_SCREENING_METRICS_PORT; 0: off)"),
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="address it binds to (default GOPWATCH_METRICS_HOST, else 127.0.0.1)")
    ] = None,
) -> None:
    """Run the screening tier: platform stills from `gopwatch.stills` in, a verdict per still out
    (`gopwatch.snapshot-verdicts`, with the escalation flag), bad stills to `gopwatch.stills.dlq`.

    Its own consumer group (GOPWATCH_SCREENING_GROUP); SIGTERM or Ctrl-C stop it after the batch.
    /metrics, /healthz and /readyz on the metrics port, as the worker's."""
    import asyncio
    import signal

    from consumers.clients import ensure_topics
    from consumers.metrics import ScreeningMetrics
    from consumers.screening import ScreeningWorker
    from models.registry import SHIPPED

    s = settings(bootstrap)
    metrics = ScreeningMetrics()
    port = s.screening_metrics_port if metrics_port is None else metrics_port
    host = s.metrics_host if metrics_host is None else metrics_host
    worker = ScreeningWorker(s, model_dir or SHIPPED, metrics)
    health_endpoints(metrics, s, port, host)

    async def _run() -> None:
        await ensure_topics(s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ready = asyncio.Event()
        waiter = asyncio.create_task(ready.wait())
        waiter.add_done_callback(
            lambda _: console.print(f"screening {s.topic_stills} as {s.screening_group}")
        )
        await worker.run(stop, ready)
        waiter.cancel()

    asyncio.run(_run())
    t = worker.tally
    console.print(f"{t.verdicts} verdicts ({t.escalated} escalated), {t.dead_letters} dead letters")


@snapshots_app.command()
def publish(
    path: Annotated[Path, typer.Argument(help="a JPEG file, or a folder of them (sorted by name)")],
    stream: Annotated[
        str | None, typer.Option("--stream", "-s", help="stream id (default: each file's name)")
    ] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Publish JPEG files to `gopwatch.stills` as a platform would (for trying the tier).

    A folder from `gopwatch synth --stills-every-s` publishes its stills under the stream's name,
    each captured at the start plus its media time; other files are captured now."""
    import asyncio
    import time

    from consumers.clients import ensure_topics, make_producer, started
    from schemas.screening import H_CAPTURE

    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{path}: no JPEG files in it ({', '.join(SUFFIXES)})")
    s = settings(bootstrap)

    manifest = path / "manifest.json" if path.is_dir() else None
    start = int(time.time() * 1000)
    plan = [(f, stream or f.stem, start) for f in files]
    if manifest is not None and manifest.exists():
        try:
            m = json.loads(manifest.read_text())
            plan = [
                (path / e["file"], stream or str(m["stream"]), start + int(e["media_ms"]))
                for e in m["stills"]
            ]
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{manifest}: not a stills manifest ({type(e).__name__}: {e})") from None

    async def _run() -> None:
        await ensure_topics(s)
        async with started(make_producer(s), s) as p:
            for f, sid, at in plan:
                await p.send_and_wait(s.topic_stills, f.read_bytes(), key=sid.encode(),
                                      headers=[(H_CAPTURE, str(at).encode())])  # fmt: skip

    asyncio.run(_run())
    console.print(f"{len(plan)} stills published to {s.topic_stills}")
