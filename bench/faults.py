"""Fault injection against Apache Kafka: what a user's operations team would do to the worker.

    .venv/bin/python bench/faults.py [--kills 6] [--garbage 600]

Each run uses fresh topics on one Apache Kafka 4 broker (started here, on a loopback port), three
labelled 360p streams of 1 s GOP-aligned segments, the shipped student with every threshold at
0.03 (events open almost all the time, so every hand-over has state to carry), load shedding and
idle close off. At its end the committed events (``read_committed``) are audited against one
uninterrupted engine fed the committed segments (:mod:`consumers.audit`): events expected, and
(event_id, revision) keys missing, duplicated, changed, or unexpected. Every goal is zero; RSS
is the largest a worker process reached. Prints a table; exit code 1 when a goal is missed.

Runs: repeated SIGKILLs of ``gopwatch serve`` at random moments; a worker killed inside its commit
(transactions left open on every state partition); a worker paused (SIGSTOP) in the middle of a
batch and woken after its partitions moved; a broker restart mid-run; garbage at volume beside the
good streams; an encoder restart (the same stream id re-sent from its start); a scale-out, 1 -> 3
-> 2 workers in one group while twelve streams run live on six partitions, with the rebalance
pause each change costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from consumers.audit import audit, by_key, committed_events, committed_records, comparable, reference_events
from consumers.brokers import KafkaBroker
from consumers.clients import ensure_topics, make_consumer, make_producer, started
from consumers.engine import Engine, InputRecord, RecordResult
from consumers.publish import publish_stream
from consumers.sink import transactional_id
from models.registry import CARD, SHIPPED
from schemas.settings import Settings
from streaming.synth import Encoding, encode_segments, random_scenario

ROOT = Path(__file__).resolve().parents[1]
console = Console(width=130)
Streams = dict[str, list]


class SlowEngine(Engine):
    """The worker's engine, slowed so that a batch takes seconds: a pause lands inside it."""

    def process(self, rec: InputRecord, now_ms: int | None = None) -> RecordResult:
        time.sleep(0.4)
        return super().process(rec, now_ms)


# a worker with the slow engine, its errors as `gopwatch serve` prints them (one line, exit 2)
SLOW_WORKER = """
import asyncio, sys
from pathlib import Path
from consumers.worker import Worker
from schemas.errors import GopwatchError
from schemas.settings import load_settings
try:
    w = Worker(load_settings(), Path(sys.argv[1]), engine="bench.faults:SlowEngine")
    asyncio.run(w.run(asyncio.Event()))
except GopwatchError as e:
    print(f"error: {e}", flush=True)
    sys.exit(2)
"""

# a worker of the group killed inside its commit: a transaction open on every state partition,
# under the partition's transactional id, then SIGKILL (the broker would keep it open 60 s)
DIE_IN_COMMIT = """
import asyncio, os, signal, sys
from aiokafka import AIOKafkaProducer
bootstrap, topic, ids = sys.argv[1], sys.argv[2], sys.argv[3:]
async def main():
    for p, tid in enumerate(ids):
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid)
        await prod.start()
        await prod.begin_transaction()
        await (await prod.send(topic, b"GWS1 never committed", key=b"x", partition=p))
    print("open", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""


@dataclass
class Run:
    name: str
    faults: str
    settings: Settings
    crashes: int = 0  # worker processes that died on their own (not the kills this run made)
    dead_letters: int = 0
    rss_mib: float = 0.0


class Fleet:
    """Worker processes of one run: ``gopwatch serve`` (or the slowed worker), their logs and RSS."""

    def __init__(self, run: Run, model: Path, logs: Path) -> None:
        self.run, self.model, self.logs = run, model, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.expected_exits: set[int] = set()  # pids this run killed or expects to stop with an error

    def start(self, slow: bool = False) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        for k, v in self.run.settings.model_dump(mode="json").items():
            if v is not None and not isinstance(v, dict | list):
                env[f"GOPWATCH_{k.upper()}"] = str(v)
        env |= {"GOPWATCH_MODEL_DIR": str(self.model), "GOPWATCH_METRICS_PORT": "0",
                "GOPWATCH_LOG_FORMAT": "json", "GOPWATCH_WORKERS": "0" if slow else "1",
                "PYTHONPATH": str(ROOT)}  # fmt: skip
        cmd = [sys.executable, "-c", SLOW_WORKER, str(self.model)] if slow else [
            sys.executable, "-m", "consumers.cli", "serve"]  # fmt: skip
        log = (self.logs / f"{self.run.name}-{len(self.procs)}.log").open("wb")
        p = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(p)
        return p

    def sample_rss(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.run.rss_mib = max(self.run.rss_mib, _tree_rss_mib(p.pid))

    def kill(self, p: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        self.expected_exits.add(p.pid)
        os.killpg(p.pid, sig)
        p.wait(30)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        self.run.crashes += sum(
            1 for p in self.procs if p.returncode not in (0, None) and p.pid not in self.expected_exits
        )


def _tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (the engine processes)."""
    total = 0.0
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True
    )
    for line in out.stdout.split():
        total += int(line) / 1024
    return total


async def publish(s: Settings, streams: Streams, lo: int, hi: int | None, end: bool, seq0: int = 0) -> None:
    async with started(make_producer(s), s) as p:
        await asyncio.gather(*(publish_stream(p, s, sid, iter(segs[lo:hi]), end_of_stream=end)
                               for sid, segs in streams.items()))  # fmt: skip


async def committed(s: Settings) -> int:
    from aiokafka import TopicPartition

    async with started(make_consumer(s, group_id=s.consumer_group), s) as c:
        return sum([await c.committed(TopicPartition(s.topic_segments, p)) or 0 for p in range(s.partitions)])


async def wait_committed(s: Settings, n: int, fleet: Fleet | None = None, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while await committed(s) < n:
        if fleet is not None:
            fleet.sample_rss()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} segment offsets were never committed")
        await asyncio.sleep(0.5)


async def sigkills(run: Run, fleet: Fleet, streams: Streams, kills: int, rnd: random.Random) -> str:
    n = len(next(iter(streams.values())))
    chunks = sorted(rnd.sample(range(1, n), kills))
    worker = fleet.start()
    lo = 0
    for hi in chunks:
        await publish(run.settings, streams, lo, hi, end=False)
        await asyncio.sleep(rnd.uniform(1.0, 4.0))  # somewhere in the work on them
        fleet.sample_rss()
        fleet.kill(worker)
        worker = fleet.start()
        lo = hi
    await publish(run.settings, streams, lo, None, end=True)
    await wait_committed(run.settings, n * len(streams) + len(streams), fleet)
    return f"{kills} SIGKILLs"


async def killed_in_commit(run: Run, fleet: Fleet, streams: Streams) -> str:
    s = run.settings
    n = len(next(iter(streams.values())))
    first = fleet.start()
    await publish(s, streams, 0, n // 3, end=False)
    await wait_committed(s, len(streams) * (n // 3), fleet)
    fleet.kill(first)
    ids = [transactional_id(s, p) for p in range(s.partitions)]
    subprocess.run([sys.executable, "-c", DIE_IN_COMMIT, s.kafka_bootstrap, s.topic_state, *ids],
                   capture_output=True, timeout=60)  # fmt: skip
    second = fleet.start()
    await publish(s, streams, n // 3, 2 * n // 3, end=False)
    await wait_committed(s, len(streams) * (2 * n // 3), fleet)
    fleet.kill(second)
    fleet.start()
    await publish(s, streams, 2 * n // 3, None, end=True)
    await wait_committed(s, n * len(streams) + len(streams), fleet)
    return "open transactions on every state partition, then 2 owners"


async def zombie(run: Run, fleet: Fleet, streams: Streams) -> str:
    s = run.settings
    n = len(next(iter(streams.values())))
    slow = fleet.start(slow=True)
    await publish(s, streams, 0, 3, end=False)
    await wait_committed(s, 3 * len(streams), fleet)
    await publish(s, streams, 3, 9, end=False)
    await asyncio.sleep(2.0)
    os.killpg(slow.pid, signal.SIGSTOP)
    fleet.start()
    await wait_committed(s, 9 * len(streams), fleet)
    fleet.expected_exits.add(slow.pid)  # fenced: it must stop with exit code 2
    os.killpg(slow.pid, signal.SIGCONT)
    code = await asyncio.to_thread(slow.wait, 60)
    await publish(s, streams, 9, None, end=True)
    await wait_committed(s, n * len(streams) + len(streams), fleet)
    return f"SIGSTOP mid-batch, SIGCONT after takeover (exit {code}{', fenced' if code == 2 else ''})"


async def broker_restart(run: Run, fleet: Fleet, streams: Streams, broker: KafkaBroker) -> str:
    s = run.settings
    n = len(next(iter(streams.values())))
    fleet.start()
    await publish(s, streams, 0, n // 2, end=False)
    await wait_committed(s, len(streams) * (n // 2), fleet)
    broker.stop()
    await asyncio.sleep(2)
    broker.start(timeout_s=120)
    await publish(s, streams, n // 2, None, end=True)
    await wait_committed(s, n * len(streams) + len(streams), fleet, timeout_s=300)
    return "broker stopped and restarted mid-run"


async def garbage(run: Run, fleet: Fleet, streams: Streams, count: int, rnd: random.Random) -> str:
    s = run.settings
    n = len(next(iter(streams.values())))
    fleet.start()
    seg = next(iter(streams.values()))[1]
    kinds = [
        lambda: seg.data[: len(seg.data) // 3],
        lambda: b"".join(b"\x47" + rnd.randbytes(187) for _ in range(40)),
        lambda: rnd.randbytes(rnd.randrange(1, 376)),
        lambda: bytes(b ^ 0xFF if rnd.random() < 0.001 else b for b in seg.data),
    ]
    bad = {f"junk-{k}": [replace(seg, sequence=i, data=kinds[(i + k) % 4]()) for i in range(count // 20)]
           for k in range(20)}  # fmt: skip
    await asyncio.gather(publish(s, streams, 0, None, end=True), publish(s, bad, 0, None, end=True))
    await wait_committed(s, n * len(streams) + len(streams) + count + len(bad), fleet)
    return f"{count} bad records on 20 stream ids beside the good streams"


async def encoder_restart(run: Run, fleet: Fleet, streams: Streams) -> str:
    s = run.settings
    n = len(next(iter(streams.values())))
    fleet.start()
    await publish(s, streams, 0, n // 2, end=False)
    await publish(s, streams, 0, None, end=True)  # reconnected: the same ids from the start again
    await wait_committed(s, (n // 2 + n) * len(streams) + len(streams), fleet)
    return "each stream re-sent from its start halfway through"


async def scale_out(run: Run, fleet: Fleet, streams: Streams) -> str:
    """Twelve streams published live; the group goes 1 -> 3 -> 2 workers while they run. The
    committed-offset total is sampled every 0.2 s; a change's rebalance pause is the longest stall
    of that total in the 40 s after it (a worker joins only once its engine is up), or until the
    last segment is committed if that comes first, against the longest stall before any change."""
    from aiokafka import TopicPartition

    s = run.settings
    n = len(next(iter(streams.values())))
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        async with started(make_consumer(s, group_id=s.consumer_group), s) as c:
            tps = [TopicPartition(s.topic_segments, p) for p in range(s.partitions)]
            while not stop.is_set():
                samples.append((time.monotonic(), sum([await c.committed(tp) or 0 for tp in tps])))
                await asyncio.sleep(0.2)

    async def live() -> None:
        async with started(make_producer(s), s) as prod:
            await asyncio.gather(*(publish_stream(prod, s, sid, iter(segs[2:]), realtime=True)
                                   for sid, segs in streams.items()))  # fmt: skip

    sampler = asyncio.create_task(sample())
    first = fleet.start()
    await publish(s, streams, 0, 2, end=False)  # the first worker is up and working
    await wait_committed(s, 2 * len(streams), fleet)
    t_live = time.monotonic()
    publisher = asyncio.create_task(live())
    await asyncio.sleep(8)
    t_up = time.monotonic()
    fleet.start(), fleet.start()
    await asyncio.sleep(max(0.0, n / 2 - 8))
    t_down = time.monotonic()
    fleet.expected_exits.add(first.pid)
    first.send_signal(signal.SIGTERM)  # to the worker's own process only, as Kubernetes and compose do
    await asyncio.to_thread(first.wait, 120)
    await publisher
    await wait_committed(s, n * len(streams) + len(streams), fleet)
    stop.set()
    await sampler

    # a window ends where the last segment was committed: after it nothing is left to commit, and
    # counting that quiet as a stall made a scale-in near the streams' end look like a 19-26 s pause
    done = next(t for t, c in samples if c == samples[-1][1])

    def stall(lo: float, hi: float) -> float:
        hi = min(hi, done)
        moves = [t for (t, c), (_, c0) in zip(samples[1:], samples, strict=False) if c > c0 and lo <= t <= hi]
        return max((b - a for a, b in zip([lo, *moves], [*moves, hi], strict=True)), default=0.0)

    before = stall(t_live + 2, t_up)
    up, down = stall(t_up, min(t_up + 40, t_down)), stall(t_down, t_down + 40)
    run.faults = (
        f"1 -> 3 -> 2 workers, {len(streams)} live streams, {s.partitions} partitions; longest commit "
        f"stall {before:.1f} s steady, {up:.1f} s scaling out, {down:.1f} s scaling in "
        f"({done - t_down:.0f} s of commits after the scale-in; exit {first.returncode})"
    )
    return run.faults


def sensitive_model(folder: Path) -> Path:
    shutil.copytree(SHIPPED, folder, dirs_exist_ok=True)
    card = json.loads((folder / CARD).read_text())
    card["thresholds"] = {c: 0.03 for c in card["thresholds"]}
    (folder / CARD).write_text(json.dumps(card))
    return folder


def differences(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> list[dict]:
    """Per (event_id, revision) that differs: what was committed and what the reference made."""
    g, w = by_key(got), by_key(want)

    def same(a: list[dict] | None, b: list[dict] | None) -> bool:
        return [comparable(e) for e in a or []] == [comparable(e) for e in b or []]

    return [{"key": list(k), "committed": g.get(k), "reference": w.get(k)} for k in sorted(set(g) | set(w))
            if not same(g.get(k), w.get(k))]  # fmt: skip


def many_streams(minutes: float, count: int = 12) -> Streams:
    """Twelve 360p streams of 1 s GOP-aligned segments (the scale-out run)."""
    enc = Encoding(width=640, height=360, gop_s=1.0, segment_s=1.0)
    with console.status(f"encoding {count} 360p streams…"):
        return {f"live-{i}": encode_segments(random_scenario(60 + i, minutes, enc))[1] for i in range(count)}


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="gopwatch-faults-"))
    rnd = random.Random(args.seed)
    model = sensitive_model(work / "model")
    with console.status("encoding three 360p streams…"):
        enc = Encoding(width=640, height=360, gop_s=1.0, segment_s=1.0)
        streams = {
            f"cam-{i}": encode_segments(random_scenario(40 + i, args.minutes, enc))[1] for i in range(3)
        }
    broker = KafkaBroker(work / "kafka")
    broker.start(timeout_s=120)
    rows = []
    scenarios: list[tuple[str, Callable[[Run, Fleet], Awaitable[str]]]] = [
        ("sigkill", lambda r, f: sigkills(r, f, streams, args.kills, rnd)),
        ("killed in commit", lambda r, f: killed_in_commit(r, f, streams)),
        ("zombie", lambda r, f: zombie(r, f, streams)),
        ("broker restart", lambda r, f: broker_restart(r, f, streams, broker)),
        ("garbage", lambda r, f: garbage(r, f, streams, args.garbage, rnd)),
        ("encoder restart", lambda r, f: encoder_restart(r, f, streams)),
        ("scale 1-3-2", lambda r, f: scale_out(r, f, many_streams(args.minutes))),
    ]
    try:
        for name, scenario in scenarios:
            if args.only and name not in args.only:
                continue
            tag = uuid.uuid4().hex[:8]
            parts = 6 if name.startswith("scale") else 2
            s = Settings(kafka_bootstrap=broker.bootstrap, topic_segments=f"f{tag}.segments",
                         topic_events=f"f{tag}.events", topic_dlq=f"f{tag}.dlq", topic_state=f"f{tag}.state",
                         topic_snapshots=f"f{tag}.snapshots", topic_kb=f"f{tag}.kb", consumer_group=f"f{tag}",
                         partitions=parts, session_timeout_ms=6000, lag_degrade_s=1e9, idle_timeout_s=1e9,
                         log_level=args.log_level)  # fmt: skip
            await ensure_topics(s)
            run = Run(name, "", s)
            fleet = Fleet(run, model, work)
            t0 = time.monotonic()
            with console.status(f"{name}…"):
                try:
                    run.faults = await scenario(run, fleet)
                finally:
                    fleet.stop_all()
                got, want = await committed_events(s), await reference_events(s, model)
                run.dead_letters = len(await committed_records(s, s.topic_dlq))
            a = audit(got, want)
            if not a.clean:  # the differing events, for whoever reads the logs
                (work / f"{name}-diff.json").write_text(json.dumps(differences(got, want), indent=1))
            rows.append((run, a, time.monotonic() - t0))
            console.print(f"{name}: {a} in {time.monotonic() - t0:.0f} s")
    finally:
        broker.stop()
    t = Table("run", "faults", "events expected", "missing", "duplicated", "changed", "unexpected",
              "dead letters", "crashes", "worker RSS MiB",
              title="fault injection, Apache Kafka, exactly-once")  # fmt: skip
    for run, a, _ in rows:
        counts = (a.expected, a.missing, a.duplicated, a.changed, a.unexpected, run.dead_letters, run.crashes)
        t.add_row(run.name, run.faults, *map(str, counts), f"{run.rss_mib:.0f}")
    console.print(t)
    console.print(f"logs: {work}")
    bad = [run.name for run, a, _ in rows if not a.clean or run.crashes]
    console.print("goals (all zero, no crash): " + ("met" if not bad else f"MISSED in {', '.join(bad)}"))
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=6, help="SIGKILLs in the sigkill run")
    ap.add_argument("--garbage", type=int, default=600, help="bad records in the garbage run")
    ap.add_argument("--minutes", type=float, default=0.5, help="length of each stream")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="run only these (names as in the table)")
    ap.add_argument("--log-level", default="WARNING", help="the workers' (their JSON logs are kept)")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
