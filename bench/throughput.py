"""End-to-end throughput: how many real-time 720p25 live streams one worker on one core sustains.

    .venv/bin/python bench/throughput.py [--streams 1,4,8,12,16] [--teacher-streams 1,2] [--seconds 90]

For each row: a fresh set of topics on a real broker (Apache Kafka by default, exactly-once), one
engine process pinned to one core (the broker, the publisher and the worker's Kafka client share
the other core), and N synthetic 720p25 streams (2 s GOP-aligned segments, B-frames; ``--height
360`` or ``1080`` for another size; silent unless ``--sound``, which gives them an AAC track, so the
base's audio tap, vectors and landmarks run too) published concurrently in real time, their starts
staggered across a segment. The streams take turns among ``--scenarios`` different scenarios (each
with captions, a QR code, flashes and cuts at its own times), so the OCR bursts of independent
streams do not all fall in the same seconds, as they would with copies of one stream. Latency is measured
per segment from its ingest (the publish time, when the segment would exist in a live stream) to
the commit of its results, through the broker. A row is *sustained* when the p99 latency stays
under two segment durations and does not grow from the first to the last fifth of the run.
Load shedding is off (``lag_degrade_s`` huge) so the rows show raw capacity.

The student rows run with a knowledge base on their topic, read by the worker before it is ready:
two clips (bigbuckbunny and carphone, pictures and sound) and the 16 taught on-screen lines of
``bench/kb_text.py``, so every GOP is embedded and searched and every line OCR read that the phrase
list does not decide is embedded by the sentence model. ``--no-kb-streams`` adds rows of the same
path with an empty base (the GOP vectors are still made; nothing is searched), in the same run.

The student path is gopwatch's worker. The teacher path is the same worker and broker with an
engine that decodes every frame to RGB and runs every teacher source on it (the per-frame RGB
pipeline the student replaces). Memory per stream: the engine process's RSS growth per open stream.
*Engine s per stream-s*: the wall time of ``Engine.process`` on the measured segments; *CPU s per
stream-s*: all of the engine process's CPU time over the row (state snapshots, pickling, the pipe
and the probes below included), both per second of media.

The *decode bound* is plain decoding (FFmpeg, one thread, no conversion) of the same streams on the
worker's core, in frames per second / 25. This machine's speed drifts by tens of percent within
minutes, so it is sampled *in the row*: the engine process decodes the stream's first segment
every 5 s between records (:class:`ProbedEngine`), and each row is set against the median of its
own samples. The whole streams' decode before and after each row is shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
from rich.console import Console
from rich.table import Table

from consumers.brokers import make_broker
from consumers.clients import ensure_topics, make_producer, started
from consumers.engine import Engine, InputRecord, RecordResult
from consumers.kbtopic import publish_example
from consumers.logs import configure_logging
from consumers.publish import publish_stream
from consumers.worker import Worker
from models.kb.base import Example
from models.registry import SHIPPED
from models.teacher.sources import make_sources
from schemas.segment import RecordKind, SegmentHeaders, record_kind
from schemas.settings import LogFormat, Settings
from streaming.kb import example_from_file, example_from_text
from streaming.media import decode_rgb
from streaming.segmenter import Segment
from streaming.synth import Encoding, encode_segments, random_scenario
from streaming.synth.assets import clip_path

console = Console(width=190)  # fifteen columns, whole in a log file too


PROBE_ENV = "GOPWATCH_BENCH_PROBE"  # the probe clip's path; its samples go to PATH.fps
PROBE_EVERY_S = 5.0


def plain_fps(data: bytes) -> float:
    """Frames per second of a plain decode of ``data`` (FFmpeg, one thread, no conversion)."""
    with av.open(io.BytesIO(data)) as c:
        st = c.streams.video[0]
        st.thread_type = "NONE"
        st.codec_context.thread_count = 1
        t0, n = time.perf_counter(), 0
        for _ in c.decode(st):
            n += 1
        return n / (time.perf_counter() - t0)


class ProbedEngine(Engine):
    """The worker's engine, which also decodes the stream's first segment plainly every
    :data:`PROBE_EVERY_S` seconds, apart from the records' time: the decode bound sampled on
    the same core, in the same process, all through the row (the probe's own cost, about 2 % of
    the core, is left on the engine's side)."""

    def __init__(self, settings: Settings, model_dir: Path) -> None:
        super().__init__(settings, model_dir)
        clip = Path(os.environ[PROBE_ENV])
        self._clip, self._samples = clip.read_bytes(), clip.with_suffix(".fps")
        self._due = 0.0

    def probe(self) -> None:
        if time.monotonic() >= self._due:
            fps = plain_fps(self._clip)
            with self._samples.open("a") as f:
                f.write(f"{fps:.1f}\n")
            self._due = time.monotonic() + PROBE_EVERY_S

    def process(self, rec: InputRecord, now_ms: int | None = None) -> RecordResult:
        self.probe()
        return super().process(rec, now_ms)


class TeacherEngine(ProbedEngine):
    """Every frame decoded to RGB and through every teacher source (segments are GOP-aligned)."""

    def __init__(self, settings: Settings, model_dir: Path) -> None:
        super().__init__(settings, model_dir)
        import torch

        torch.set_num_threads(1)
        self.teacher = make_sources(threads=1)

    def process(self, rec: InputRecord, now_ms: int | None = None) -> RecordResult:
        if record_kind(rec.headers) is RecordKind.CONTROL:
            return super().process(rec, now_ms)
        self.probe()
        t0 = time.perf_counter()
        h = SegmentHeaders.from_kafka(rec.headers)
        frames = np.stack([rgb for _, rgb in decode_rgb(rec.value or b"")])
        for src in self.teacher:
            src(frames, 25.0)
        return RecordResult(rec.stream_id, ingest_ms=h.ingest_ms, seconds=time.perf_counter() - t0)


def cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_base() -> list[Example]:
    """The knowledge base of the student rows: two clips and the benchmark's taught lines."""
    from bench.data.onscreen_text import TAUGHT

    clips = [("bigbuckbunny", "bbb"), ("carphone_pristine", "carphone")]
    examples = [example_from_file(clip_path(c), "banned_stream_rebroadcast", eid) for c, eid in clips]
    return examples + [example_from_text(line, "text_lexicon", f"line-{i}") for i, line in enumerate(TAUGHT)]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_row(
    bootstrap: str,
    path: str,
    n: int,
    streams: Sequence[Sequence[Segment]],
    cpu: int,
    tag: str,
    model_dir: Path = SHIPPED,
    base: Sequence[Example] = (),
) -> dict[str, float]:
    shed = path == "student+shed"
    s = Settings(
        kafka_bootstrap=bootstrap, topic_segments=f"{tag}.segments", topic_events=f"{tag}.events",
        topic_dlq=f"{tag}.dlq", topic_state=f"{tag}.state", topic_snapshots=f"{tag}.snapshots",
        topic_kb=f"{tag}.kb", consumer_group=f"{tag}-workers", partitions=max(2, n), workers=1,
        lag_degrade_s=2.0 if shed else 1e9, idle_timeout_s=1e9, max_in_flight=64, log_level="WARNING",
    )  # fmt: skip
    await ensure_topics(s)
    if base:  # the worker reads the whole topic before it reports ready
        await publish_example(s, *base)
    latencies: list[tuple[float, float]] = []  # (ingest time, latency)
    busy = [0.0]  # engine seconds spent on the measured segments
    degraded = [0]

    def committed(outs: list[RecordResult], now: float) -> None:
        for o in outs:
            if o.ingest_ms and o.outcome == "ok":
                latencies.append((o.ingest_ms / 1000, now - o.ingest_ms / 1000))
                busy[0] += o.seconds
                degraded[0] += o.mode.value != "full"

    engine = "bench.throughput:TeacherEngine" if path == "teacher" else "bench.throughput:ProbedEngine"
    probe = Path(tempfile.mkdtemp(prefix="gopwatch-probe-")) / "clip.ts"
    segs = streams[0]
    probe.write_bytes(segs[0].data)
    os.environ[PROBE_ENV] = str(probe)  # the engine process is spawned with this environment
    w = Worker(s, model_dir, True, on_committed=committed, engine=engine, cpus=[cpu])
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(w.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 120)
    pid = w.shards.procs[0].pid  # type: ignore[union-attr]
    async with started(make_producer(s), s) as p:  # warm-up: JIT kernels, decoder and model buffers
        await publish_stream(p, s, "warm-up", iter(segs[:3]), end_of_stream=True)
    while w.processed < 4 and not task.done():
        await asyncio.sleep(0.1)
    latencies.clear()
    busy[0], degraded[0] = 0.0, 0
    base_rss, base_cpu = rss_mib(pid), cpu_s(pid)
    samples = probe.with_suffix(".fps")
    warm = len(samples.read_text().split()) if samples.exists() else 0  # the warm-up's probes
    peak_rss = base_rss
    seg_s = segs[0].media_duration_s
    total = sum(len(streams[i % len(streams)]) for i in range(n))

    async def one(i: int, p: object) -> None:
        await asyncio.sleep(i * seg_s / n)  # staggered, as independent live streams are
        mine = streams[i % len(streams)]
        await publish_stream(p, s, f"{path}-{i}", iter(mine), realtime=True, end_of_stream=False)

    async with started(make_producer(s), s) as p:
        pub = asyncio.gather(*(one(i, p) for i in range(n)))
        while not pub.done():
            peak_rss = max(peak_rss, rss_mib(pid))
            await asyncio.sleep(0.5)
        await pub
    deadline = time.monotonic() + 30 + max(map(len, streams)) * seg_s
    while len(latencies) < total and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.25)
    used = cpu_s(pid) - base_cpu
    in_row = [float(x) for x in samples.read_text().split()[warm:]] if samples.exists() else []
    stop.set()
    await task
    shutil.rmtree(probe.parent, ignore_errors=True)
    lat = [x for _, x in sorted(latencies)]
    fifth = max(1, len(lat) // 5)
    done = len(lat)
    p50 = statistics.median(lat) if lat else float("inf")
    p99 = float(np.percentile(lat, 99)) if lat else float("inf")
    first, last = statistics.median(lat[:fifth]) if lat else 0, statistics.median(lat[-fifth:]) if lat else 0
    sustained = done == total and p99 < 2 * seg_s and last < first + seg_s
    media_s = done * seg_s
    return {"streams": n, "done": done, "total": total, "p50": p50, "p99": p99, "first": first, "last": last,
            "sustained": sustained, "mib_per_stream": (peak_rss - base_rss) / n,
            "load": busy[0] / media_s if media_s else float("nan"),
            "cpu": used / media_s if media_s else float("nan"),
            "bound": statistics.median(in_row) / 25 if in_row else float("nan"), "probes": len(in_row),
            "degraded": degraded[0] / done if done else 0.0}  # fmt: skip


def decode_fps(wholes: Sequence[bytes], cpu: int, rounds: int = 3) -> float:
    """Plain decoding (FFmpeg, one thread, no conversion) of the bench streams on the worker's core:
    the median frames per second of ``rounds`` passes over them. Divided by 25 it is the bound on
    live 720p25 streams per core that no analysis of decoded video can pass."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        passes = [wholes[k % len(wholes)] for k in range(max(rounds, len(wholes)))]
        return statistics.median(plain_fps(whole) for whole in passes)
    finally:
        os.sched_setaffinity(0, before)


async def main_async(args: argparse.Namespace) -> tuple[list[tuple[str, dict[str, float]]], list[float]]:
    cpus = sorted(os.sched_getaffinity(0))
    worker_cpu, rest = cpus[-1], set(cpus[:-1]) or {cpus[0]}
    os.sched_setaffinity(0, rest)  # this process and the broker it starts stay off the worker's core
    size = Encoding(width=args.height * 16 // 9, height=args.height, audio=args.sound)
    with console.status(f"encoding {args.scenarios} {args.seconds:.0f}s {args.height}p25 synthetic streams…"):
        scs = [random_scenario(7 + k, args.seconds / 60, size, name="bench") for k in range(args.scenarios)]
        encoded = await asyncio.gather(*(asyncio.to_thread(encode_segments, sc) for sc in scs))
    wholes, streams = [w for w, _ in encoded], [segs for _, segs in encoded]
    with console.status("plain decoding on the worker's core (the bound)…"):
        fps = [decode_fps(wholes, worker_cpu)]  # before the rows, and again after each
    rows: list[tuple[str, dict[str, float]]] = []
    with console.status("the knowledge base (two clips, 16 lines)…"):
        base = await asyncio.to_thread(bench_base)
    workdir = Path(tempfile.mkdtemp(prefix="gopwatch-bench-"))  # the broker's logs: hundreds of MiB
    broker = make_broker(args.broker, workdir)
    with console.status(f"starting {args.broker}…"):
        broker.start(timeout_s=120)
    try:
        plan = [("student", n) for n in args.streams] + [("teacher", n) for n in args.teacher_streams]
        plan += [("student+shed", n) for n in args.shed_streams]
        plan += [("no-kb", n) for n in args.no_kb_streams]
        for k, (path, n) in enumerate(plan):
            with console.status(f"{path} path, {n} live streams ({k + 1}/{len(plan)})…"):
                tag = f"bench{k}-{os.getpid()}"
                kb = base if path.startswith("student") else []
                r = await run_row(broker.bootstrap, path, n, streams, worker_cpu, tag, args.model_dir, kb)
                fps.append(decode_fps(wholes, worker_cpu))
            r["around"] = (fps[-2] + fps[-1]) / 2 / 25  # the bound from the decodes before and after
            rows.append((path, r))
            console.print(f"{path:8s} {n:3d} streams: p50 {r['p50']:.2f}s p99 {r['p99']:.2f}s "
                          f"{'sustained' if r['sustained'] else 'NOT sustained'}")  # fmt: skip
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,4,8,12,16", help="student-path stream counts")
    ap.add_argument("--teacher-streams", default="1,2", help="teacher-path stream counts")
    ap.add_argument(
        "--shed-streams", default="16", help="student path with load shedding on (2 s lag); 0: none"
    )
    ap.add_argument(
        "--no-kb-streams", default="", help="student path with an empty knowledge base, for its cost"
    )
    ap.add_argument("--seconds", type=float, default=90.0, help="length of each live stream")
    ap.add_argument(
        "--scenarios",
        type=int,
        default=6,
        help="different streams (seeds 7, 8, …) that the live streams take turns on",
    )
    sizes = (360, 720, 1080)
    ap.add_argument("--height", type=int, choices=sizes, default=720, help="the streams' size (16:9)")
    ap.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    ap.add_argument(
        "--sound", action="store_true", help="streams with sound (AAC): the base's audio tap and searches run"
    )
    ap.add_argument("--model-dir", type=Path, default=SHIPPED, help="the student checkpoint (a pruned one)")
    args = ap.parse_args()

    def counts(text: str, flag: str) -> list[int]:
        """Comma-separated stream counts; 0 (or nothing) means no row of that path."""
        try:
            ns = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            ap.error(f"{flag} {text!r}: comma-separated whole numbers, e.g. 1,4,8")
        if any(n < 0 for n in ns):
            ap.error(f"{flag} {text!r}: stream counts cannot be negative")
        return [n for n in ns if n > 0]

    if args.seconds < 6 or args.scenarios < 1:
        ap.error("--seconds must be at least 6 (three segments) and --scenarios at least 1")
    args.streams = counts(args.streams, "--streams")
    args.teacher_streams = counts(args.teacher_streams, "--teacher-streams")
    args.shed_streams = counts(args.shed_streams, "--shed-streams")
    args.no_kb_streams = counts(args.no_kb_streams, "--no-kb-streams")
    configure_logging(LogFormat.CONSOLE, "WARNING")
    rows, fps = asyncio.run(main_async(args))
    bound = statistics.median(fps) / 25
    live = f"live {args.height}p25 streams{' with sound' if args.sound else ''}"
    t = Table(title=f"{live} on one worker core ({args.broker}, {args.seconds:.0f}s each)")
    cols = ("path", "streams", "segments", "p50 s", "p99 s", "first→last fifth s", "sustained",
            "engine s per stream-s", "CPU s per stream-s", "× plain decode", "degraded", "MiB/stream",
            "bound before/after", "bound in row", "streams / bound")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="right")
    for path, r in rows:
        t.add_row(path, str(r["streams"]), f"{r['done']}/{r['total']}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                  f"{r['first']:.2f}→{r['last']:.2f}", "yes" if r["sustained"] else "no", f"{r['load']:.3f}",
                  f"{r['cpu']:.3f}", f"{r['load'] * r['bound']:.2f}x", f"{r['degraded']:.0%}",
                  f"{r['mib_per_stream']:.1f}", f"{r['around']:.1f}", f"{r['bound']:.1f} ({r['probes']})",
                  f"{r['streams'] / r['bound']:.0%}" if r["sustained"] else "-")  # fmt: skip
    console.print(t)
    best = {
        p: max([r["streams"] for q, r in rows if q == p and r["sustained"]], default=0)
        for p in ("student", "teacher")
    }
    of_bound = max([r["streams"] / r["bound"] for q, r in rows if q == "student" and r["sustained"]],
                   default=0)  # fmt: skip
    ratio = best["student"] / best["teacher"] if best["teacher"] else float("inf")
    load = {p: statistics.median([r["load"] for q, r in rows if q == p] or [float("nan")]) for p in best}
    cpu_ratio = load["teacher"] / load["student"]
    console.print(
        f"plain decode of the whole streams on the worker's core before and after each row: "
        f"{min(fps):.0f}-{max(fps):.0f} fps (median {bound:.1f} {live}); the best sustained "
        f"student row is {of_bound:.0%} of the bound sampled in its row (goal: 70 %)"
    )
    if any(q == "no-kb" for q, _ in rows):
        bare = statistics.median([r["load"] for q, r in rows if q == "no-kb"])
        console.print(f"engine seconds per stream-second with the knowledge base {load['student']:.4f}, "
                      f"with an empty one {bare:.4f}: the base adds {load['student'] - bare:.4f} "
                      f"(medians over the rows; goal ≤ 0.01)")  # fmt: skip
    if not any(q == "teacher" for q, _ in rows):
        return
    console.print(f"sustained streams per core: student {best['student']}, teacher {best['teacher']} "
                  f"(ratio {ratio:.1f}x; tested counts only); engine seconds per stream-second: student "
                  f"{load['student']:.3f}, teacher {load['teacher']:.3f} ({cpu_ratio:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
