"""Media: synthetic streams, publishing segments, compressed-domain extraction, analysis of a file."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID
from rich.table import Table

from consumers.cli.app import (
    Bootstrap,
    KbDir,
    ModelDir,
    app,
    console,
    kb_folder,
    model_dir,
    out,
    progress,
    require_source,
    settings,
)
from consumers.errors import PublishError
from schemas.errors import UsageError


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
    stills_every_s: Annotated[
        float,
        typer.Option(
            min=0, max=600, help="also write a JPEG still every N seconds, as a platform does (0: none)"
        ),
    ] = 0.0,
) -> None:
    """Make labelled synthetic live streams: segments, whole stream, scenario and ground truth (and
    the platform's stills of them, for `gopwatch snapshots publish`)."""
    from streaming.synth import Encoding, load_scenario, random_scenario
    from streaming.synth.files import write_stills, write_stream

    if codec not in ("libx264", "libx265", "mpeg4"):
        raise typer.BadParameter("must be libx264, libx265 or mpeg4", param_hint="--codec")
    settings()
    if scenario is not None:
        scs = [load_scenario(scenario)]
    else:
        enc = Encoding(width=width // 2 * 2, height=height // 2 * 2, fps=fps, codec=codec, audio=audio)
        scs = [random_scenario(seed + k, minutes, enc) for k in range(streams)]
    with progress() as prog:
        for sc in scs:
            task = prog.add_task(f"{sc.name}", total=round(sc.duration_s * sc.encoding.fps))

            def advance(i: int, n: int, t: TaskID = task) -> None:
                prog.update(t, completed=i)

            folder, segs = write_stream(sc, out_dir, advance)
            labels = sc.ground_truth()["labels"]
            stills = write_stills(sc, folder, stills_every_s) if stills_every_s else []
            extra = f", {len(stills)} stills" if stills else ""
            prog.console.print(f"{folder}: {len(segs)} segments{extra}, {len(labels)} labelled risks")


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
    silence_s: Annotated[
        float, typer.Option(min=0.5, max=3600, help="a live URL silent this long has ended (end-of-stream)")
    ] = 10.0,
    reconnect_s: Annotated[
        float,
        typer.Option(
            min=0,
            max=3600,
            help="a live URL whose connection ended is retried this long (encoder reconnects)",
        ),
    ] = 5.0,
    wait_s: Annotated[
        float | None,
        typer.Option(min=0, help="give up on a live URL that is not there after this long (default: wait)"),
    ] = None,
    epoch: Annotated[
        int | None,
        typer.Option(min=0, help="ingest session (gopwatch-epoch); default: this run's start in Unix ms"),
    ] = None,
    stat_url: Annotated[
        str | None,
        typer.Option(help="nginx-rtmp's stat page, to follow every key of rtmp://host/app/* as it publishes"),
    ] = None,
    max_streams: Annotated[int, typer.Option(min=1, max=4096, help="most keys followed at once")] = 64,
    bootstrap: Bootstrap = None,
) -> None:
    """Cut sources at keyframes and publish them to the segments topic, several streams concurrently.

    Each run is a new ingest session of its streams (a new epoch), so a restarted publisher never
    reuses the event ids of an earlier run; --epoch sets it (0: none). A live URL is waited for
    (a status line says so) and ends when it falls silent; Ctrl-C or SIGTERM stops every stream
    after its current segment, with its end-of-stream record. A live URL whose connection ends is
    reopened with backoff for --reconnect-s (an encoder reconnect continues the stream in a new
    epoch); then, or after --silence-s without a packet, it has ended.
    rtmp://host:port/app/* with --stat-url follows every key of that application (the key is the
    stream id), starting and ending with each encoder."""
    from consumers.clients import ensure_topics, make_producer, started
    from consumers.publish import Follower, Published, is_application_url, iter_source, publish_stream
    from streaming.segmenter import LiveSource

    apps = [src for src in sources if is_application_url(src)]
    plain = [src for src in sources if not is_application_url(src)]
    if apps and stat_url is None:
        raise typer.BadParameter(
            f"{apps[0]} names every key of an application: give nginx-rtmp's stat page to discover them",
            param_hint="--stat-url",
        )
    if stat_url is not None and not stat_url.startswith(("http://", "https://")):
        raise typer.BadParameter("must be an http(s) URL (nginx-rtmp's stat page)", param_hint="--stat-url")
    ids = list(stream_id or [])
    if ids and len(ids) != len(plain):
        raise typer.BadParameter(
            f"got {len(ids)} stream ids for {len(plain)} sources", param_hint="--stream-id"
        )
    ids = ids or [Path(src.rstrip("/")).stem or f"stream-{k}" for k, src in enumerate(plain)]
    s = settings(bootstrap)
    session = int(time.time() * 1000) if epoch is None else epoch
    stop = threading.Event()
    waiting: dict[str, float] = {}

    def on_wait(src: str) -> Callable[[float, str], None]:
        def report(waited: float, why: str) -> None:
            last = waiting.get(src)
            if last is None or waited < last or waited - last >= 10.0:  # every 10 s, not every attempt
                waiting[src] = waited
                console.print(f"waiting for {src} ({waited:.0f} s; {why}); Ctrl-C stops", soft_wrap=True)

        return report

    def live(src: str) -> LiveSource:
        return LiveSource(silence_s=silence_s, reconnect_s=reconnect_s, wait_s=wait_s, stop=stop,
                          on_wait=on_wait(src))  # fmt: skip

    iters = [iter_source(src, segment_s, live(src)) for src in plain]
    followers = [
        Follower(src, stat_url or "", live=lambda url: live(url),
                 segment_s=segment_s, max_streams=max_streams,
                 on_event=lambda line: console.print(line, soft_wrap=True))
        for src in apps
    ]  # fmt: skip

    async def _run() -> tuple[list[int], list[dict[str, int]]]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await ensure_topics(s)
        with progress() as prog:
            tasks = {sid: prog.add_task(sid, total=None) for sid in ids}

            def on_pub(p: Published) -> None:
                if p.stream_id not in tasks:
                    tasks[p.stream_id] = prog.add_task(p.stream_id, total=None)
                prog.update(tasks[p.stream_id], advance=1)

            async with started(make_producer(s), s) as producer:
                streams = asyncio.gather(
                    *(
                        publish_stream(producer, s, sid, it, realtime=realtime, on_published=on_pub,
                                       epoch=session, stop=stop)
                        for sid, it in zip(ids, iters, strict=True)
                    )
                )  # fmt: skip
                discovered = asyncio.gather(
                    *(f.run(producer, s, stop, on_published=on_pub, realtime=realtime) for f in followers)
                )
                return await streams, await discovered

    counts, found = asyncio.run(_run())
    for sid, n in zip(ids, counts, strict=True):
        out.print(f"{sid}: {n} segments to {s.topic_segments}")
    for per_key in found:
        for sid, n in per_key.items():
            out.print(f"{sid}: {n} segments to {s.topic_segments}")
    if stop.is_set():
        console.print("stopped: every stream's end-of-stream record was sent")
    elif not any(counts) and not any(n for per_key in found for n in per_key.values()):
        raise PublishError("nothing was published: the sources held no decodable video")


@app.command()
def extract(
    source: Annotated[str, typer.Argument(help="a video file or URL (H.264, HEVC, MPEG-4 Part 2)")],
    dump_mvs: Annotated[
        Path | None, typer.Option(help="write FFmpeg's raw motion vectors per frame (mvs-<i>.npy) here")
    ] = None,
    png: Annotated[Path | None, typer.Option(help="write a motion-field picture of one GOP here")] = None,
    gop: Annotated[int, typer.Option(min=0, help="which GOP the picture shows")] = 0,
    skip_loop_filter: Annotated[bool, typer.Option(help="no deblocking on non-key frames")] = False,
    keyframes_only: Annotated[bool, typer.Option(help="decode key frames only (no motion)")] = False,
) -> None:
    """Compressed-domain features per GOP: a summary table, raw vectors, a motion-field picture."""
    import numpy as np
    from PIL import Image

    from streaming.extract import ExtractConfig
    from streaming.media import iter_motion_vectors
    from streaming.offline.pictures import motion_picture
    from streaming.pipeline import extract_file

    settings()
    require_source(source)
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
            raise UsageError(f"the stream has no GOP {gop}")
        Image.fromarray(motion_picture(picked)).save(png)
        out.print(f"motion field of GOP {gop} written to {png}")


@app.command()
def analyze(
    source: Annotated[str, typer.Argument(help="a video file or a live URL FFmpeg can open")],
    json_out: Annotated[
        bool, typer.Option("--json", help="one risk event per line, in the wire schema")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="HTML report path (default out/analyze-<name>.html)")
    ] = None,
    model: ModelDir = None,
    cascade: Annotated[
        bool, typer.Option(help="run OCR/QR on the I-frame when the student is unsure")
    ] = True,
    kb: KbDir = None,
) -> None:
    """Run the compressed-domain pipeline on one video or live URL, without Kafka: the worker's
    path, segment by segment."""
    from streaming.offline.report import analysis_report
    from streaming.pipeline import LivePath, analyze_source

    s = settings()
    require_source(source)
    live = LivePath.load(s, model_dir(s, model), cascade=cascade, kb=kb_folder(kb))
    name = Path(source).stem or "stream"
    results = []
    for r in analyze_source(source, live.session(name)):
        results.append(r)
        for e in r.events:
            if json_out:
                print(e.model_dump_json(), flush=True)
            else:
                color = {"started": "red", "updated": "yellow", "ended": "green"}[e.lifecycle.value]
                out.print(
                    f"[{color}]{e.lifecycle.value:>7}[/] {e.category!s:<22} "
                    f"{e.window.start_s:7.2f}–{e.window.end_s:7.2f}s  score {e.score:.2f}  {e.event_id[:12]}"
                )
    path = report or Path("out") / f"analyze-{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        analysis_report(f"gopwatch analyze: {source}", results, live.thresholds, live.model_version)
    )
    console.print(f"{len(results)} GOPs analysed; report: {path}")
