"""Training corpora for distillation: compressed-domain inputs, teacher outputs and labels per GOP.

For each stream: the extractor's GOP records (student inputs), the teacher's sources run on the
decoded RGB frames of the same GOPs, and, for synthetic streams, labels from the ground truth.
Label-free streams (a user's own recordings) carry NaN labels; distillation then learns from the
teacher alone. The teacher's outputs are expensive: they are cached on disk, keyed by the stream's
bytes, the teacher's version and sources and the truth. The student's inputs are cheap (seconds a
stream) and are recomputed every time, so a change to them or to the extraction re-runs no teacher.

Label per GOP: flashing when a flash overlay covers at least half the GOP; QR code and known
content when the overlay is on screen at the GOP's first frame (the I-frame the student sees).

What the student learns for ``text_lexicon`` is *text on screen*, any text: the compressed domain
shows that there are glyphs, not which words they spell. Its target is the teacher's OCR "text
present" feature and, with ground truth, every text overlay (scam text and benign captions alike);
the cascade's OCR then reads the words on the I-frame and decides the lexicon match
(:mod:`models.cascade`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.distill import Corpus
from models.student import CATEGORIES, StudentConfig
from models.teacher.audio import RATE, decode_audio
from models.teacher.sources import feature_columns, make_sources, run_sources
from streaming.extract import ExtractConfig, GopFeatures
from streaming.media import decode_rgb
from streaming.pipeline import extract_segments
from streaming.segmenter import segment_stream
from streaming.synth import Encoding, encode_stream, random_scenario
from streaming.tensors import extraction_for, gop_arrays, stack_gops, windows

TEACHER_VERSION = "teacher-2"  # 2: faces and audio sources; packets attributed by timestamp
Progress = Callable[[int, int], None]
StreamProgress = Callable[[str, int, int], None]  # stream name, GOPs done, GOPs in all


@dataclass
class StreamSamples:
    stream: str
    start_s: np.ndarray  # (G,)
    end_s: np.ndarray
    inputs: dict[str, np.ndarray]  # per GOP: thumb, maps, series, stats
    teacher_feats: np.ndarray  # (G, D)
    teacher_scores: np.ndarray  # (G, C), NaN where no source scores the category
    labels: np.ndarray  # (G, C), NaN when unlabelled
    teacher_s: float  # CPU seconds the teacher spent on this stream

    def save_teacher(self, path: Path) -> None:
        """The expensive part: everything but the student's inputs."""
        np.savez_compressed(
            path, stream=self.stream, start_s=self.start_s, end_s=self.end_s,
            teacher_feats=self.teacher_feats, teacher_scores=self.teacher_scores, labels=self.labels,
            teacher_s=self.teacher_s,
        )  # fmt: skip

    @classmethod
    def load_teacher(cls, path: Path) -> StreamSamples:
        z = np.load(path)
        return cls(
            str(z["stream"]), z["start_s"], z["end_s"], {}, z["teacher_feats"], z["teacher_scores"],
            z["labels"], float(z["teacher_s"]),
        )  # fmt: skip


TEXT = CATEGORIES.index("text_lexicon")


def gop_labels(truth: dict[str, Any] | None, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per GOP and category: 1 where the truth says so (text: any text overlay, see above)."""
    out = np.full((len(starts), len(CATEGORIES)), np.nan if truth is None else 0.0, np.float32)
    if truth is None:
        return out
    spans = [(lab["category"], lab["start_s"], lab["end_s"]) for lab in truth["labels"]]
    spans += [("text_lexicon", n["start_s"], n["end_s"]) for n in truth.get("hard_negatives", [])
              if n["kind"] == "benign_text"]  # fmt: skip
    for cat, a, b in spans:
        c = CATEGORIES.index(cat)
        if cat == "photosensitive_flash":
            overlap = np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0, None)
            out[overlap >= 0.5 * (ends - starts), c] = 1.0
        else:
            out[(starts >= a) & (starts < b), c] = 1.0
    return out


def student_targets(scores: np.ndarray, feats: np.ndarray, sources: Sequence[str]) -> np.ndarray:
    """The teacher's per-category scores as the student learns them: for text, the OCR source's
    "text present" feature in place of its lexicon verdict (NaN without an OCR source)."""
    out = scores.copy()
    out[:, TEXT] = feats[:, feature_columns(sources, "ocr")][:, 0] if "ocr" in sources else np.nan
    return out


def _frames_by_gop(data: bytes, records: list[GopFeatures], max_w: int) -> list[np.ndarray]:
    """Decoded RGB frames of each record's time range (at most max_w wide)."""
    from streaming.media import probe

    info = probe(data)
    scale = min(1.0, max_w / info.width)
    w, h = int(info.width * scale) // 2 * 2, int(info.height * scale) // 2 * 2
    buckets: list[list[np.ndarray]] = [[] for _ in records]
    k = 0
    for t, rgb in decode_rgb(data, w, h):
        while k < len(records) - 1 and t >= records[k].end_s - 1e-3:
            k += 1
        if records[k].start_s - 1e-3 <= t < records[k].end_s + 1e-3:
            buckets[k].append(rgb)
    return [np.stack(b) if b else np.zeros((1, h, w, 3), np.uint8) for b in buckets]


def build_stream(
    name: str,
    data: bytes,
    truth: dict[str, Any] | None,
    cfg: StudentConfig,
    sources: Sequence[str],
    cache_dir: Path | None = None,
    teacher_width: int = 640,
    progress: Progress | None = None,
    extract: ExtractConfig | None = None,
) -> StreamSamples:
    """Everything distillation needs from one stream (MPEG-TS bytes); the teacher part cached."""
    steps = extraction_for(cfg)  # the teacher's time steps: full decoding
    meta = json.dumps([TEACHER_VERSION, list(sources), teacher_width, steps.step_s, truth])
    key = hashlib.sha256(data + meta.encode()).hexdigest()[:20]
    path = cache_dir / f"{name}-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        samples = StreamSamples.load_teacher(path)
        return _with_inputs(_as_targets(samples, truth, sources), name, data, cfg, extract or steps)
    records = _records(name, data, steps)
    starts = np.array([r.start_s for r in records], np.float32)
    ends = np.array([r.end_s for r in records], np.float32)
    import time

    t0 = time.process_time()
    teacher = make_sources(sources)
    frames = _frames_by_gop(data, records, teacher_width)
    audio = decode_audio(data)
    feats, scores = [], []
    for i, fr in enumerate(frames):
        clip = audio[int(starts[i] * RATE) : int(ends[i] * RATE)] if audio is not None else None
        outs = run_sources(teacher, fr, 25.0, clip)
        feats.append(np.concatenate([o.features for o in outs]))
        row = np.full(len(CATEGORIES), np.nan, np.float32)
        for o in outs:
            for c, v in o.scores.items():
                row[CATEGORIES.index(c.value)] = v
        scores.append(row)
        if progress:
            progress(i + 1, len(frames))
    samples = StreamSamples(
        name, starts, ends, {}, np.stack(feats).astype(np.float32), np.stack(scores),
        gop_labels(truth, starts, ends), time.process_time() - t0,
    )  # fmt: skip
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        samples.save_teacher(path)
    return _with_inputs(_as_targets(samples, truth, sources), name, data, cfg, extract or steps, records)


def _as_targets(
    samples: StreamSamples, truth: dict[str, Any] | None, sources: Sequence[str]
) -> StreamSamples:
    """The cached teacher outputs as the student learns them; labels from the truth (cheap)."""
    return dataclasses.replace(
        samples,
        teacher_scores=student_targets(samples.teacher_scores, samples.teacher_feats, sources),
        labels=gop_labels(truth, samples.start_s, samples.end_s),
    )


def _records(name: str, data: bytes, extract: ExtractConfig) -> list[GopFeatures]:
    return extract_segments(name, segment_stream(data, include_audio=False), extract)


def _with_inputs(
    samples: StreamSamples,
    name: str,
    data: bytes,
    cfg: StudentConfig,
    extract: ExtractConfig,
    records: list[GopFeatures] | None = None,
) -> StreamSamples:
    """The stream's student inputs under ``extract`` (the decoder's cheap options too), next to the
    teacher's outputs: each teacher step gets the record that covers its start. I-frame-only
    decoding makes one record per GOP where full decoding cuts long GOPs into steps; the GOP's
    record then stands for all of them."""
    extract = extraction_for(cfg, extract)
    if records is None or extract != extraction_for(cfg):
        records = _records(name, data, extract)
    if not records:
        raise ValueError(f"{name}: no records with {extract}")
    starts = np.array([r.start_s for r in records])
    idx = np.clip(np.searchsorted(starts, samples.start_s + 1e-3, side="right") - 1, 0, len(records) - 1)
    return dataclasses.replace(samples, inputs=stack_gops([gop_arrays(records[i], cfg) for i in idx]))


def synth_streams(
    seeds: Sequence[int],
    minutes: float,
    enc: Encoding,
    cfg: StudentConfig,
    sources: Sequence[str],
    cache: Path | None,
    progress: StreamProgress | None = None,
    extract: ExtractConfig | None = None,
) -> list[StreamSamples]:
    out = []
    for seed in seeds:
        sc = random_scenario(seed, minutes, enc)
        data = encode_stream(sc)

        def step(i: int, n: int, name: str = sc.name) -> None:
            if progress is not None:
                progress(name, i, n)

        out.append(
            build_stream(
                sc.name, data, sc.ground_truth(), cfg, sources, cache, progress=step, extract=extract
            )
        )
    return out


VIDEO_SUFFIXES = (".mp4", ".ts", ".mkv", ".mov", ".flv", ".m4v", ".webm", ".h264", ".264")


def video_streams(
    folder: Path,
    cfg: StudentConfig,
    sources: Sequence[str],
    cache: Path | None,
    progress: StreamProgress | None = None,
) -> list[StreamSamples]:
    """A user's own recordings as label-free streams: remuxed to MPEG-TS, teacher run, labels NaN."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    out = []
    for f in files:
        data = b"".join(seg.data for seg in segment_stream(f, include_audio=False))

        def step(i: int, n: int, name: str = f.stem) -> None:
            if progress is not None:
                progress(name, i, n)

        out.append(build_stream(f.stem, data, None, cfg, sources, cache, progress=step))
    return out


def to_corpus(streams: Sequence[StreamSamples], window: int) -> Corpus:
    parts = [windows(s.inputs, window) for s in streams]
    return Corpus(
        {k: np.concatenate([p[k] for p in parts]) for k in parts[0]},
        np.concatenate([s.teacher_feats for s in streams]),
        np.concatenate([s.teacher_scores for s in streams]),
        np.concatenate([s.labels for s in streams]),
    )
