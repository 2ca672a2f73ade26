"""Synthetic streams: deterministic by seed, scenario files, and ground truth that holds on decoded frames."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from models.lexicon import DEFAULT_LEXICON, Lexicon
from models.teacher.flash import FlashAnalyzer
from schemas.events import Category
from streaming.errors import ScenarioError
from streaming.media import decode_rgb, probe
from streaming.synth import Renderer, encode_stream, load_scenario, random_scenario
from streaming.synth.scenario import FlashOverlay, Scenario, Scene
from tests.conftest import SMALL, small_scenario


def _digest(sc: Scenario, frames: list[int]) -> str:
    r = Renderer(sc)
    h = hashlib.sha256()
    for i in frames:
        h.update(r.frame(i).tobytes())
    return h.hexdigest()


def test_same_seed_same_frames_other_seed_other_frames():
    a = random_scenario(5, 0.5, SMALL)
    b = random_scenario(5, 0.5, SMALL)
    c = random_scenario(6, 0.5, SMALL)
    assert a == b and a != c
    picks = [0, 37, 200, 555, 740]
    assert _digest(a, picks) == _digest(b, picks)
    assert _digest(a, picks) != _digest(c, picks)


def test_render_order_does_not_matter():
    sc = random_scenario(9, 0.3, SMALL)
    r1, r2 = Renderer(sc), Renderer(sc)
    late_first = r1.frame(300)
    for i in range(0, 300, 50):
        r2.frame(i)
    assert np.array_equal(late_first, r2.frame(300))


def test_random_scenario_covers_every_risk_and_negatives_in_two_minutes():
    gt = random_scenario(1, 2.0, SMALL).ground_truth()
    cats = {x["category"] for x in gt["labels"]}
    assert cats == {c.value for c in Category}
    kinds = {x["kind"] for x in gt["hard_negatives"]}
    assert {"subthreshold_strobe", "benign_text", "slow_fade"} <= kinds
    assert {"fast_motion", "rapid_cuts"} & kinds


def test_text_overlay_label_follows_the_lexicon():
    assert DEFAULT_LEXICON.matches("Free Crypto GIVEAWAY!!")
    assert not DEFAULT_LEXICON.matches("good game everyone")
    assert Lexicon.of(["good game"]).matches("GOOD GAME everyone") == ("good game",)
    assert not DEFAULT_LEXICON.matches("carefreecryptography")  # whole words only (run together is fine)


def test_scenario_files_yaml_and_errors(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text(
        "name: mine\nduration_s: 6\nencoding: {width: 160, height: 90}\n"
        "scenes:\n  - {start_s: 0, kind: screen}\n"
        "overlays:\n  - {kind: text, start_s: 1, end_s: 3, text: 'DM ME ON TELEGRAM'}\n"
    )
    sc = load_scenario(good)
    assert sc.ground_truth()["labels"][0]["category"] == "text_lexicon"
    cases = {
        "bad.yaml": ("scenes: [\n", "not valid YAML"),
        "late.yaml": (
            "duration_s: 2\nscenes: [{start_s: 0, kind: photo}]\n"
            "overlays: [{kind: qr, start_s: 5, end_s: 6}]\n",
            "after the stream ends",
        ),
        "kind.yaml": ("duration_s: 2\nscenes: [{start_s: 0, kind: cinema}]\n", "scenes.0.kind"),
        "first.yaml": ("duration_s: 2\nscenes: [{start_s: 1, kind: photo}]\n", "must start at 0"),
    }
    for name, (text, message) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ScenarioError) as e:
            load_scenario(p)
        assert message in str(e.value), name
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def _decoded_flash_verdict(overlay: FlashOverlay) -> bool:
    sc = Scenario(
        name="f",
        seed=3,
        duration_s=3.0,
        encoding=SMALL,
        scenes=(Scene(start_s=0, kind="photo", source="coffee", motion="pan"),),
        overlays=(overlay,),
    )
    fa = FlashAnalyzer(25)
    return any(fa.push(rgb, t).violation for t, rgb in decode_rgb(encode_stream(sc)))


@pytest.mark.parametrize(
    "overlay",
    [
        FlashOverlay(start_s=0.5, end_s=2.5, hz=6, area=0.6),
        FlashOverlay(start_s=0.5, end_s=2.5, hz=7, area=0.5, color="red"),
        FlashOverlay(start_s=0.5, end_s=2.5, hz=1.5, area=0.8),
        FlashOverlay(start_s=0.5, end_s=2.5, hz=7, area=0.03),
        FlashOverlay(start_s=0.5, end_s=2.5, hz=7, area=0.8, contrast=0.05),
    ],
    ids=["general", "red", "slow-strobe", "small", "low-contrast"],
)
def test_flash_ground_truth_holds_on_decoded_h264(overlay):
    labelled = overlay.risk_category is Category.PHOTOSENSITIVE_FLASH
    assert _decoded_flash_verdict(overlay) is labelled


def test_encoded_stream_has_fixed_gops_bframes_and_audio():
    sc = small_scenario(duration_s=4.0, audio=True)
    data = encode_stream(sc)
    info = probe(data)
    assert (info.width, info.height, info.fps, info.has_audio) == (320, 180, 25.0, True)
    import io

    import av

    with av.open(io.BytesIO(data)) as c:
        types, keys = [], []
        for i, f in enumerate(c.decode(video=0)):
            types.append(av.video.frame.PictureType(f.pict_type).name)
            if f.key_frame:
                keys.append(i)
    assert keys == [0, 50]
    assert "B" in types and len(types) == 100
