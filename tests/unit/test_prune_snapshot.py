"""Pruning the stills' compressed-domain classifier: its dependency groups cut with Torch-Pruning,
the screening copy of the cut network, and a small prune end to end that the tier loads."""

from __future__ import annotations

import json

import cv2
import pytest
import torch

from models import group_pruning as G
from models.registry import SHIPPED
from models.snapshot.fold import for_inference
from models.snapshot.jpeg import coefficients
from models.snapshot.net import load_snapshot
from schemas.screening import StillSource
from streaming.offline import prune_snapshot as P
from streaming.offline.stills import real_stills, synthetic_stills
from streaming.screening import Screener, batch
from streaming.synth.assets import photo


def _still(w: int = 1280, h: int = 720) -> bytes:
    picture = cv2.resize(photo("astronaut"), (w, h))
    return cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def test_the_traced_form_gives_the_classifiers_logits():
    net, _ = load_snapshot(SHIPPED)
    y, cb, cr, sub = batch([coefficients(_still(), log_scaled=True, keep=16)])
    with torch.no_grad():
        scene, cue = net(y, cb, cr, sub)
        assert torch.allclose(P.Traced(net)(y, cb, cr), torch.cat([scene, cue], 1), atol=1e-5)


def test_cutting_the_zeroed_channels_keeps_the_outputs_and_the_screening_copy_follows():
    """The body's three groups (each convolution with its batch norm and its readers' inputs, the
    last one's with the heads') cut physically: the masked network's logits, the screening copy
    (ONNX Runtime) of the cut one equal to it, and half the screening copy's MACs."""
    net, _ = load_snapshot(SHIPPED)
    full = P.screening_macs(net)
    ex = P.example()
    traced = P.Traced(net)
    cs = G.groups(traced, ex, [net.luma[0], *net.chroma.values()])
    assert sorted(c.n for c in cs) == [32, 48, 64]
    G.choose(cs, "l1", 0.5, round_to=16)
    G.zero_chosen(cs)
    y, cb, cr, sub = batch([coefficients(_still(), log_scaled=True, keep=16)])
    with torch.no_grad():
        masked = net(y, cb, cr, sub)
    G.cut(traced, ex, cs)
    with torch.no_grad():
        cut = net(y, cb, cr, sub)
        screened = for_inference(net)(y, cb, cr, sub)
    for a, b, c in zip(masked, cut, screened, strict=True):
        assert torch.allclose(a, b, atol=1e-4) and torch.allclose(b, c, atol=1e-4)
    assert full / P.screening_macs(net) > 2.0


def test_a_small_snapshot_prune_writes_a_checkpoint_the_screening_tier_loads(tmp_path):
    stills = list(synthetic_stills([1, 2, 3], 3, 0)) + list(real_stills(0, training=True, variants=1))[:12]
    test = {"synthetic": list(synthetic_stills([9001, 9002], 3, 1))}
    plan = P.SnapshotPrunePlan(out_dir=tmp_path / "pruned", model_dir=SHIPPED, epochs=1)
    card = P.prune_snapshot(plan, stills=stills, test=test)
    p = card["pruning"]
    assert p["macs_720p"] * 2 <= p["macs_720p_unpruned"] and p["cut_vs_masked_max_gap"] < 1e-4
    assert p["body_widths"][0] == [32, 48, 64] and p["body_widths"][1] != [32, 48, 64]
    assert p["schedule"]["steps"] >= 1 and p["schedule"]["ramp_steps"] >= 1
    assert set(card["metrics"]["synthetic"]) == {"before", "after", "n"}
    written = json.loads((tmp_path / "pruned" / "snapshot.card.json").read_text())
    assert written["sha256"] == card["sha256"]
    net, _ = load_snapshot(tmp_path / "pruned")
    assert list(net.cfg.body) == p["body_widths"][1]
    source = StillSource(topic="gopwatch.stills", partition=0, offset=0)
    verdict = Screener.load(tmp_path / "pruned").screen("s1", 0, _still(), source)
    assert verdict.scene in net.cfg.scenes and verdict.model_version.startswith(written["version"])


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--criterion", "l3"], "--criterion l3: one of l1, l2, bn, taylor"),
        (["--method", "magic"], "--method magic: progressive or oneshot"),
    ],
)
def test_prune_snapshot_refuses_bad_arguments_in_one_line(args, why, tmp_path):
    from tests.unit.test_cli import run

    r = run("prune", "--model", "snapshot", *args, "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and why in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "p").exists()
