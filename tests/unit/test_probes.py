"""The real-footage probe suite's fast subset through the whole live path (the full suite is
``gopwatch eval --suite real``; its numbers are in the README)."""

from __future__ import annotations

import pytest

from streaming.offline import probes as P
from streaming.synth.scenario import CLIPS, PHOTOS


@pytest.fixture(scope="module")
def results():
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.pipeline import LivePath

    live = LivePath.load(Settings(), SHIPPED)
    return {p.name: P.run_probe(live, p) for p in P.suite(quick=True)}


def test_the_suite_uses_no_footage_the_training_corpus_uses():
    pics = P.footage()
    assert pics and not set(pics) & (set(PHOTOS) | set(CLIPS))
    assert {p.category for p in P.suite()} == {"text_lexicon", "qr_code", "photosensitive_flash", None}
    assert len({p.name for p in P.suite()}) == len(P.suite())  # names are the probes' ids


def test_what_the_live_path_finds_on_real_footage_it_finds_inside_the_span(results):
    """A boxed and an outlined scam line (the outlined one the student scores 0.03: the cascade
    reads it anyway), a plain yellow one over a busy photograph (read since detection runs on
    480 pixels; its phrase, "send crypto", joined the list in the same change), two QR codes (the
    smaller one the student scores 0.07: the reader reads it anyway), one with a hand over its
    bottom finder pattern (no decoder reads it; zxing-cpp finds its format information), a
    full-frame 6 Hz flash and a 60 % 4 Hz one (the student scores it 0.91, under its 0.98
    threshold: the WCAG count on the decoder's luma grid decides), each over a held-out
    photograph under a moving camera: found, every event inside its span, no event of another
    category (the small QR code sits on a shaken dune texture, which the luma check must not take
    for a flash); subtitles and a real cut raise nothing."""
    for name in ("text-0.08-right-box", "text-0.12-bottom-outline", "text-0.08-middle-plain",
                 "qr-0.40-warp0.00-occl0.00",
                 "qr-0.25-warp0.00-occl0.00", "qr-0.25-warp0.00-occl0.15", "flash-1.00-6hz-white-centre",
                 "flash-0.60-4hz-white-centre"):  # fmt: skip
        r = results[name]
        assert r.found and r.inside and not r.false_alarms, r
        assert r.first_s is not None and P.LEAD_S - P.GOP_S <= r.first_s <= P.LEAD_S + P.SPAN_S
    for name in ("benign-subtitles", "benign-cut-camera"):
        r = next(v for k, v in results.items() if k.startswith(name))
        assert r.found and not r.false_alarms, r  # a benign probe is "found" when nothing fired


MISSED = "#14 open: plain yellow text 3 % of the frame high over a photograph is not detected on 480 pixels"


@pytest.mark.parametrize("name", ["text-0.03-left-plain"])
@pytest.mark.xfail(strict=True, reason=MISSED)
def test_what_the_live_path_still_misses_on_real_footage(results, name):
    assert results[name].found
