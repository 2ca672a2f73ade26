"""The knowledge base of risk examples: ``gopwatch kb add|remove|list|search|export|import|stats``.

Every subcommand works on a directory base (``--dir``), which ``gopwatch analyze --kb DIR`` reads.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from consumers.cli.app import Bootstrap, app, console, out, settings
from schemas.errors import UsageError

if TYPE_CHECKING:
    from models.kb.base import Example, KnowledgeBase, Nearest

kb_app = typer.Typer(help="The knowledge base of risk examples: teach a risk once, find it everywhere.",
                     no_args_is_help=True)  # fmt: skip
app.add_typer(kb_app, name="kb")

KbDir = Annotated[
    Path | None,
    typer.Option("--dir", help="a knowledge-base folder; without it, the live base (the gopwatch.kb topic)"),
]


def _load(folder: Path | None, bootstrap: str | None = None) -> KnowledgeBase:
    """A folder base, or the live one read from the topic (records it cannot read are named)."""
    from models.kb.base import KnowledgeBase

    s = settings(bootstrap)
    if folder is None:
        from consumers.clients import ensure_topics
        from consumers.kbtopic import live_base

        async def read() -> KnowledgeBase:
            await ensure_topics(s)
            return await live_base(s, on_skip=lambda why: console.print(f"skipped a record: {why}"))

        return asyncio.run(read())
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    return KnowledgeBase.load(folder)


def _empty() -> KnowledgeBase:
    from models.kb.base import KnowledgeBase

    return KnowledgeBase()


def _store(folder: Path | None, bootstrap: str | None, kb: KnowledgeBase, added: list[Example],
           removed: list[str], thresholds: dict[str, float] | None = None) -> str:  # fmt: skip
    """Write the changes: the folder (whole), or one record per change to the topic (the
    ``_thresholds`` record for new per-category thresholds). Where."""
    if thresholds is not None:
        from models.kb.wire import decode_thresholds, encode_thresholds

        thresholds = decode_thresholds(encode_thresholds(thresholds))  # the topic's own checks
        kb.set_thresholds(thresholds)
    if folder is not None:
        kb.save(folder)
        return f"{folder} (base {kb.version})"
    from consumers.clients import ensure_topics
    from consumers.kbtopic import publish_example, publish_thresholds, remove_example

    s = settings(bootstrap)

    async def send() -> None:
        await ensure_topics(s)
        if added:
            await publish_example(s, *added)
        for eid in removed:
            await remove_example(s, eid)
        if thresholds is not None:
            await publish_thresholds(s, thresholds)

    asyncio.run(send())
    return f"{s.topic_kb} on {s.kafka_bootstrap}"


@kb_app.command("add")
def add(
    source: Annotated[
        Path | None, typer.Argument(help="a video clip (its pictures and sound), an image or a sound file")
    ] = None,
    category: Annotated[
        str | None,
        typer.Option(
            help="built-in (known_content, text_lexicon, …) or your own name "
            "[default: known_content; the event's for --from-still]"
        ),
    ] = None,
    text: Annotated[str | None, typer.Option(help="an on-screen line instead of a file")] = None,
    from_still: Annotated[
        str | None,
        typer.Option(
            "--from-still",
            help="an event's evidence still (evidence.thumbnail_ref, kafka://…) "
            "instead of a file; with --negative, the operator's 'not a risk' for that picture",
        ),
    ] = None,
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
    example_id: Annotated[
        str | None, typer.Option("--id", help="the example's id (default: sha256 prefix)")
    ] = None,
    negative: Annotated[
        bool, typer.Option(help="allow-list it: streams closer to it than to a risk match nothing")
    ] = False,
    notes: Annotated[str, typer.Option(max=1000, help="free text for operators")] = "",
) -> None:
    """Add an example, a file, --text or --from-still (replaces one with the same id); prints its id."""
    from streaming.kb import example_from_file, example_from_text

    if sum(x is not None for x in (source, text, from_still)) != 1:
        raise UsageError("give a file, --text or --from-still, one of the three")
    kb = _load(folder, bootstrap) if folder is not None else None
    with console.status(f"reading {source or from_still or 'the line'}…"):
        if text is not None:
            ex = example_from_text(text, category or "known_content", example_id, negative, notes)
        elif from_still is not None:
            from consumers.stills import still_example

            fetch = still_example(settings(bootstrap), from_still, category, example_id, negative, notes)
            ex = asyncio.run(fetch)
        else:
            assert source is not None
            ex = example_from_file(source, category or "known_content", example_id, negative, notes)
    if kb is not None:
        kb.add(ex)
    where = _store(folder, bootstrap, kb or _empty(), [ex], [])
    console.print(f"{ex.example_id}: {_contents(ex)}, category {ex.category}"
                  f"{' (negative)' if negative else ''}, to {where}")  # fmt: skip
    out.print(ex.example_id)


@kb_app.command("remove")
def remove(
    example_id: Annotated[str, typer.Argument(help="the example's id")],
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Remove an example."""
    kb = _load(folder, bootstrap)
    if not kb.remove(example_id):
        raise UsageError(f"{example_id}: no such example in {folder or 'the live base'}")
    console.print(f"removed {example_id} from {_store(folder, bootstrap, kb, [], [example_id])}")


@kb_app.command("list")
def list_(
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per example")] = False,
) -> None:
    """The examples: id, category, negative, vectors, notes."""
    kb = _load(folder, bootstrap)
    if json_out:
        for ex in kb.examples.values():
            row = {"id": ex.example_id, "category": ex.category, "negative": ex.negative,
                   "vectors": len(ex.vectors), "notes": ex.notes, "sha256": ex.source_sha256,
                   "modality": ex.modality, "text": ex.text,
                   "sound": 0 if ex.sound is None else len(ex.sound),
                   "landmarks": 0 if ex.marks is None else len(ex.marks)}  # fmt: skip
            print(json.dumps(row), flush=True)
        return
    t = Table(
        "id", "category", "negative", "vectors", "notes", title=f"{folder or 'live base'}: {kb.version}"
    )
    for ex in kb.examples.values():
        notes = (f"text: {ex.text}" if ex.text else ex.notes)[:40]
        t.add_row(ex.example_id, ex.category, "yes" if ex.negative else "", _contents(ex), notes)
    out.print(t)


def _contents(ex: Example) -> str:
    """What an example holds: "120 visual + 300 audio vectors + 4000 landmarks"."""
    sound = f" + {len(ex.sound)} audio" if ex.sound is not None else ""
    marks = f" + {len(ex.marks)} landmarks" if ex.marks is not None else ""
    return f"{len(ex.vectors)} {ex.modality}{sound} vectors{marks}"


@kb_app.command("search")
def search(
    source: Annotated[Path | None, typer.Argument(help="a video, image or sound to look up")] = None,
    text: Annotated[str | None, typer.Option(help="an on-screen line to look up instead")] = None,
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per example")] = False,
    top: Annotated[int, typer.Option(min=1, max=100, help="how many examples")] = 5,
) -> None:
    """The examples nearest a file, with their similarity and whether each would decide a match
    (a positive over its threshold, and no negative at least as close)."""
    from models.kb.base import AUDIO, LANDMARKS, TEXT, VISUAL, Nearest
    from streaming.kb import best_runs, file_vectors

    if (source is None) == (text is None):
        raise UsageError("give a file or --text, one of the two")
    kb = _load(folder, bootstrap)
    if text is not None:
        from models.kb.text import text_vectors

        ranked = kb.nearest(text_vectors([text]), k=len(kb.examples), modality=TEXT)
        _show(kb, [(n, TEXT) for n in ranked], json_out, f"{text!r}", top)
        return
    assert source is not None
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    seen, heard, marks = file_vectors(source)
    best: dict[str, tuple[tuple[bool, float], Nearest, str]] = {}
    for space, run in ((VISUAL, seen), (AUDIO, heard), (LANDMARKS, marks)):
        if len(run) and kb.has(space):
            for eid, sim in best_runs(kb, run, space).items():
                ex, t = kb.examples[eid], kb.threshold(kb.examples[eid].category, space)
                n = Nearest(eid, ex.category, round(sim, 4), ex.negative, not ex.negative and sim >= t)
                key = (n.passes, sim - t)  # in several spaces: where it passes, else the furthest over
                if eid not in best or key > best[eid][0]:
                    best[eid] = (key, n, space)
    _show(kb, [(n, space) for _, n, space in best.values()], json_out, str(source), top)


def _show(kb: KnowledgeBase, ranked: list[tuple[Nearest, str]], json_out: bool, what: str, top: int) -> None:
    """The nearest ``top``; a positive decides a match when it passes its threshold and no
    negative is at least as close (:func:`models.kb.match.allowed_by`)."""
    from models.kb.match import allowed_by

    allowed = allowed_by(ranked)
    rows = [(n, space, n.passes and n.example_id not in allowed) for n, space in ranked]
    rows = sorted(rows, key=lambda r: (not r[2], -r[0].similarity, r[0].example_id))[:top]
    if json_out:
        for n, space, match in rows:
            row = {"id": n.example_id, "category": n.category, "similarity": n.similarity,
                   "negative": n.negative, "match": match, "space": space,
                   "allowed_by": allowed.get(n.example_id)}  # fmt: skip
            print(json.dumps(row), flush=True)
        return
    t = Table("id", "category", "space", "similarity", "threshold", "match",
              title=f"{what} against base {kb.version}")  # fmt: skip
    for n, space, match in rows:
        name = n.category + (" (negative)" if n.negative else "")
        verdict = "yes" if match else ""
        if n.example_id in allowed:
            verdict = f"no: allow-listed by {allowed[n.example_id]}"
        t.add_row(n.example_id, name, space, f"{n.similarity:.3f}", f"{kb.threshold(n.category, space):.2f}",
                  verdict)  # fmt: skip
    out.print(t)


@kb_app.command("threshold")
def threshold(
    category: Annotated[str, typer.Argument(help="the category")],
    value: Annotated[
        float | None, typer.Argument(min=0.0, max=1.0, help="its threshold; none: back to the default")
    ] = None,
    space: Annotated[
        str, typer.Option(help="visual, text, audio or landmarks: similarities differ by space")
    ] = "visual",
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Set (or clear) one category's match threshold in one space."""
    if space not in ("visual", "text", "audio", "landmarks"):
        raise UsageError(f"--space {space!r}: visual, text, audio or landmarks")
    kb = _load(folder, bootstrap)
    key = category if space == "visual" else f"{category}:{space}"
    thresholds = dict(kb.thresholds)
    if value is None:
        thresholds.pop(key, None)
    else:
        thresholds[key] = value
    where = _store(folder, bootstrap, kb, [], [], thresholds)
    shown = "the default" if value is None else f"{value:.3f}"
    console.print(f"{category} ({space}): {shown}, to {where}")


@kb_app.command("calibrate")
def calibrate_(
    validation: Annotated[
        Path, typer.Argument(help="a folder: <category>/ of files showing it, benign/ of files showing none")
    ],
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
    apply: Annotated[bool, typer.Option(help="store the fitted thresholds in the base")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per category")] = False,
) -> None:
    """Fit each category's thresholds on a labelled validation set, at precision 1.0 there:
    just over the best score of any file that does not show the category."""
    from rich.progress import track

    from streaming.kb import calibrate

    if not validation.is_dir():
        raise UsageError(f"{validation}: not a folder")
    files: list[tuple[Path, str | None]] = []
    for sub in sorted(p for p in validation.iterdir() if p.is_dir()):
        label = None if sub.name == "benign" else sub.name
        files += [(f, label) for f in sorted(sub.iterdir()) if f.is_file() and not f.name.startswith(".")]
    if not any(label is None for _, label in files):
        raise UsageError(f"{validation}: no benign/ files, so nothing says where a threshold must stay above")
    kb = _load(folder, bootstrap)
    if not kb.examples:
        raise UsageError("the base has no examples to calibrate")
    scored: list[tuple[Path, str | None]] = list(track(files, description="validation files", console=console,
                                                       transient=True))  # fmt: skip
    fitted = calibrate(kb, scored)
    thresholds = dict(kb.thresholds)
    for c in fitted:
        for space, t in c.thresholds.items():
            thresholds[c.category if space == "visual" else f"{c.category}:{space}"] = t
    if json_out:
        for c in fitted:
            print(json.dumps({"category": c.category, "thresholds": c.thresholds, "positives": c.positives,
                              "found": c.found, "negatives": c.negatives}), flush=True)  # fmt: skip
    else:
        table = Table("category", "visual (now)", "audio (now)", "its files found", "other files",
                      title=f"{validation}: thresholds at precision 1.0")  # fmt: skip
        for c in fitted:
            shown = [
                f"{c.thresholds[sp]:.3f} ({kb.threshold(c.category, sp):.2f})" if sp in c.thresholds else "-"
                for sp in ("visual", "audio")
            ]
            table.add_row(c.category, *shown, f"{c.found} of {c.positives}", str(c.negatives))
        out.print(table)
        few = min((c.negatives for c in fitted), default=0)
        if few < 20:
            console.print(f"[yellow]{few} files that do not show a category: a threshold fitted on so few is "
                          "optimistic; more benign footage makes it hold")  # fmt: skip
    if apply:
        console.print(f"stored in {_store(folder, bootstrap, kb, [], [], thresholds)}")
    else:
        console.print("not stored (--apply stores them)")


@kb_app.command("export")
def export(
    target: Annotated[Path, typer.Argument(help="a new folder")],
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Copy the base (manifest with a sha256 per file) to another folder."""
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target}: not empty")
    kb = _load(folder, bootstrap)
    kb.save(target)
    console.print(f"exported {len(kb.examples)} examples (base {kb.version}) to {target}")


@kb_app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="an exported base")],
    folder: KbDir = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Add every example of an exported base (each file verified against its sha256)."""
    from models.kb.base import KnowledgeBase

    incoming = KnowledgeBase.load(source)
    if not incoming.examples:
        raise UsageError(f"{source}: no knowledge base there")
    kb = _load(folder, bootstrap)
    for ex in incoming.examples.values():
        kb.add(ex)
    kb.thresholds = incoming.thresholds | kb.thresholds
    where = _store(folder, bootstrap, kb, list(incoming.examples.values()), [])
    console.print(f"imported {len(incoming.examples)} examples to {where}")


@kb_app.command("stats")
def stats(folder: KbDir = None, bootstrap: Bootstrap = None) -> None:
    """Examples and vectors per category, the version, memory."""
    from collections import Counter

    from models.kb.base import DIMS, LANDMARKS

    kb = _load(folder, bootstrap)
    per = Counter(ex.category for ex in kb.examples.values())
    vecs: Counter[str] = Counter()
    for ex in kb.examples.values():
        vecs[ex.category] += len(ex.vectors) + (len(ex.sound) if ex.sound is not None else 0)
    t = Table("category", "examples", "vectors", "threshold", title=f"{folder or 'live base'}: {kb.version}")
    for cat in sorted(per):
        t.add_row(cat, str(per[cat]), str(vecs[cat]), f"{kb.threshold(cat):.2f}")
    out.print(t)
    marks = kb.vector_count(LANDMARKS)  # int32 pairs, and their index's hash, frame and owner
    memory = sum(kb.vector_count(m) * dim * 4 for m, dim in DIMS.items()) + marks * 20
    line = f"{kb.vector_count()} vectors and {marks} landmarks: {memory / 1e6:.1f} MB in memory"
    if folder is not None and folder.is_dir():
        line += f", {sum(f.stat().st_size for f in folder.glob('*')) / 1e6:.1f} MB on disk"
    console.print(line)
