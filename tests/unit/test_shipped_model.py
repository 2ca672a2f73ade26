"""The checkpoint that ships in models/weights loads, matches its card, and finds risks on a stream
it never saw (a seed outside train/val/test), with a paired benign stream that stays quiet."""

from __future__ import annotations

from pathlib import Path

import pytest

import models
from models.registry import load_student
from models.runtime import StudentRuntime
from schemas.events import Category
from streaming.analyzer import StreamAnalyzer
from streaming.pipeline import analyze_source, analyzer_session
from streaming.synth import Encoding, encode_stream
from streaming.synth.scenario import FlashOverlay, Scenario, Scene, TextOverlay

WEIGHTS = Path(models.__file__).parent / "weights"


@pytest.fixture(scope="module")
def shipped():
    net, card = load_student(WEIGHTS)
    return net, card


def test_card_matches_checkpoint_and_reports_metrics(shipped):
    net, card = shipped
    # fields newer than a checkpoint take their documented defaults (models.registry._config_of)
    cfg = __import__("json").loads(__import__("json").dumps(net.cfg.to_dict()))
    assert card.sha256 and card.config == {k: v for k, v in cfg.items() if k in card.config}
    assert set(card.thresholds) == {c.value for c in Category}
    assert card.metrics["params"] < 2_000_000
    assert card.metrics["test"]["photosensitive_flash"]["auc_vs_truth"] > 0.9


def _scores(net, card, scenario: Scenario) -> dict[Category, float]:
    thresholds = {Category(c): float(v) for c, v in card.thresholds.items()}
    a = StreamAnalyzer("s", StudentRuntime(net), thresholds, card.version)
    results = list(analyze_source(encode_stream(scenario), analyzer_session(a)))
    return {c: max(r.scores[c] for r in results) for c in Category}


def test_flash_and_scam_text_found_benign_twin_quiet(shipped):
    net, card = shipped
    w, h = card.data["resolution"]
    enc = Encoding(width=w, height=h)
    scenes = (Scene(start_s=0, kind="photo", source="coffee", motion="pan", sprites=0),)
    risky = Scenario(
        name="r",
        seed=9001,
        duration_s=10,
        encoding=enc,
        scenes=scenes,
        overlays=(
            FlashOverlay(start_s=2.0, end_s=6.0, hz=7, area=0.7),
            TextOverlay(start_s=5.9, end_s=10.0, text="FREE CRYPTO GIVEAWAY", y=0.5, size=0.1),
        ),
    )
    benign = Scenario(
        name="b",
        seed=9001,
        duration_s=10,
        encoding=enc,
        scenes=scenes,
        overlays=(FlashOverlay(start_s=2.0, end_s=6.0, hz=1.5, area=0.7),),
    )
    thr = {Category(c): float(v) for c, v in card.thresholds.items()}
    r, b = _scores(net, card, risky), _scores(net, card, benign)
    assert r[Category.PHOTOSENSITIVE_FLASH] >= thr[Category.PHOTOSENSITIVE_FLASH]
    assert b[Category.PHOTOSENSITIVE_FLASH] < thr[Category.PHOTOSENSITIVE_FLASH]
    assert r[Category.TEXT_LEXICON] > b[Category.TEXT_LEXICON]


def test_text_anywhere_on_screen_and_the_cascade_reads_the_words(shipped):
    """The student says *that* there is text (mid-frame and low, scam or caption alike); with the
    cascade, OCR turns the scam phrase into a risk and leaves the caption quiet."""
    from models.cascade import Cascade

    net, card = shipped
    w, h = card.data["resolution"]
    enc = Encoding(width=w, height=h)
    scenes = (Scene(start_s=0, kind="photo", source="coffee", motion="pan", sprites=0),)
    thr = {Category(c): float(v) for c, v in card.thresholds.items()}

    def run(text: str, y: float) -> tuple[float, float]:
        sc = Scenario(name="t", seed=9002, duration_s=8, encoding=enc, scenes=scenes,
                      overlays=(TextOverlay(start_s=1.5, end_s=8.0, text=text, y=y, size=0.09),))  # fmt: skip
        a = StreamAnalyzer("s", StudentRuntime(net), thr, card.version, cascade=Cascade())
        results = list(analyze_source(encode_stream(sc), analyzer_session(a)))
        return max(r.student_scores[Category.TEXT_LEXICON] for r in results), max(
            r.scores[Category.TEXT_LEXICON] for r in results
        )

    t = thr[Category.TEXT_LEXICON]
    for y in (0.5, 0.8):
        student, final = run("SEND BTC DOUBLE IT", y)
        assert student >= 0.4 and final >= t, (y, student, final)  # seen, then read as a risk
    student, final = run("THANKS FOR WATCHING", 0.5)
    assert student >= 0.4 and final < t, (student, final)  # seen, read, and not a risk
