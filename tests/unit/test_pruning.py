"""Progressive-sparsity structured pruning of the student (models/pruning.py, gopwatch prune)."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch

from models import pruning
from models.registry import SHIPPED, load_student
from models.student import StudentConfig, StudentNet


@pytest.fixture(scope="module")
def shipped() -> StudentNet:
    return load_student(SHIPPED)[0]


def _windows(net: StudentNet, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    c, w = net.cfg, net.cfg.window
    shapes = (
        (3, *c.thumb_hw),
        (c.map_channels, *c.grid_hw),
        (c.series_channels, c.series_len),
        (c.stats_dim,),
    )
    return tuple(torch.rand(n, w, *shape, generator=g) for shape in shapes)


def test_the_penalty_weight_grows_as_recorded_then_holds():
    s = pruning.Schedule(peak=0.2, ramp=100)
    w = [s.weight(t) for t in range(0, 150, 10)]
    assert w[0] == 0 and all(b > a for a, b in itertools.pairwise(w[:11]))
    assert s.weight(50) == pytest.approx(0.2 * 0.25) and s.weight(100) == s.weight(149) == 0.2
    assert s.to_dict()["form"] == "peak * min(1, step / ramp_steps) ** 2"


def test_thresholding_zeroes_exactly_the_chosen_filters_under_the_threshold(shipped):
    net = copy.deepcopy(shipped)
    layer = pruning.layers(net)[1]  # iframe.body.1.0 with its batch norm
    with torch.no_grad():
        for i, scale in ((0, 1e-4), (1, 1e-4), (2, 1.0), (3, 1e-4)):
            norm = max(float(pruning.group_norms(layer)[i]), 1e-12)
            for p in layer.params():
                p[i] = p[i] / norm * scale
    before = pruning.group_norms(layer).clone()
    chosen = {layer.name: [0, 1, 2, 5]}  # 3 is small but not chosen; 2 and 5 are chosen but large
    zero = pruning.threshold_step(net, chosen, shrink=0.0, threshold=1e-3)
    after = pruning.group_norms(layer)
    assert zero == 2 and after[0] == 0 and after[1] == 0
    assert torch.equal(after[2:], before[2:])  # the large chosen ones and everything else untouched
    assert pruning.zeroed(net) == {layer.name: [0, 1]}
    other = pruning.layers(net)[0]
    assert torch.equal(pruning.group_norms(other), pruning.group_norms(pruning.layers(shipped)[0]))


def test_the_proximal_shrink_moves_group_norms_towards_zero_by_the_step(shipped):
    net = copy.deepcopy(shipped)
    layer = pruning.layers(net)[4]  # maps.body.0.0
    before = pruning.group_norms(layer).clone()
    pruning.threshold_step(net, {layer.name: [0, 1, 2]}, shrink=0.01, threshold=0.0)
    after = pruning.group_norms(layer)
    assert torch.allclose(after[:3], torch.clamp(before[:3] - 0.01, min=0), atol=1e-5)
    assert torch.equal(after[3:], before[3:])


@pytest.mark.parametrize("criterion", pruning.CRITERIA)
def test_cutting_the_zeroed_filters_keeps_the_masked_networks_outputs(shipped, criterion):
    net = copy.deepcopy(shipped)
    if criterion == "taylor":
        logits, emb = net(*_windows(net))
        (logits.pow(2).sum() + emb.pow(2).sum()).backward()
    chosen = pruning.choose(net, criterion, 0.4)
    assert set(chosen) == {la.name for la in pruning.layers(net)}  # every branch, output layers too
    pruning.zero_filters(net, chosen)
    small = pruning.remove(net, chosen)
    assert pruning.macs_per_gop(small) < 0.45 * pruning.macs_per_gop(shipped)
    x = _windows(net, seed=1)
    with torch.no_grad():
        (a, ea), (b, eb) = net.eval()(*x), small(*x)
    assert torch.allclose(a, b, atol=1e-4) and torch.allclose(ea, eb, atol=1e-4)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in shipped.parameters())


def test_rounded_choices_keep_a_multiple_of_the_block_in_every_layer(shipped):
    chosen = pruning.choose(shipped, "l1", 0.3, round_to=16)
    for layer in pruning.layers(shipped):
        n = layer.conv.out_channels
        kept = n - len(chosen.get(layer.name, []))
        if n <= 16:  # no larger than a block: cut by the share alone
            assert kept == n - round(0.3 * n)
        else:
            assert kept % 16 == 0 and 16 <= kept < n


def test_a_global_ranking_cuts_the_least_important_filters_of_the_whole_network(shipped):
    """Scores are compared across layers relative to each layer's mean: doubling every score of
    one layer moves cuts out of it and into the others."""
    net = copy.deepcopy(shipped)
    before = pruning.choose(net, "l1", 0.3, scope="global")
    assert sum(map(len, before.values())) == round(
        0.3 * sum(la.conv.out_channels for la in pruning.layers(net))
    )
    layer = pruning.layers(net)[1]  # iframe.body.1.0
    with torch.no_grad():  # every filter of it made as strong as its strongest: all at the layer's mean
        w = layer.conv.weight
        norms = w.abs().flatten(1).sum(1)
        w.mul_((norms.max() / norms)[:, None, None, None])
    after = pruning.choose(net, "l1", 0.3, scope="global")
    assert len(after.get(layer.name, [])) < len(before.get(layer.name, []))
    with pytest.raises(ValueError, match="scope"):
        pruning.choose(net, "l1", 0.3, scope="everywhere")


def test_macs_are_counted_per_gop_from_the_layers():
    net = StudentNet(StudentConfig(width=8, embed_dim=16))
    conv = 3 * 4 * 9 * 45 * 80  # the first I-frame conv: 3 -> 4 channels, stride 2 over 90 x 160
    gru = net.cfg.window * 3 * 16 * (16 + 16)
    assert pruning.macs_per_gop(net) > conv + gru


def test_a_pruned_checkpoint_round_trips_through_the_registry(shipped, tmp_path):
    from dataclasses import replace

    from models.registry import ModelCard, save_student

    net = copy.deepcopy(shipped)
    chosen = pruning.choose(net, "l2", 0.3)
    pruning.zero_filters(net, chosen)
    small = pruning.remove(net, chosen)
    small.cfg = replace(small.cfg, extra={"pruned": "progressive"})
    card = ModelCard("t", "t-pruned", {}, "")
    norm = torch.load(SHIPPED / "student.pt", weights_only=True)["teacher_norm"]
    save_student(tmp_path, small, card, {k: v.numpy() for k, v in norm.items()})
    loaded, loaded_card = load_student(tmp_path)
    x = _windows(net, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(*x)[0], small(*x)[0])
    assert (
        loaded_card.sha256
        and json.loads((tmp_path / "student.card.json").read_text())["version"] == "t-pruned"
    )
    from schemas.settings import Settings
    from streaming.pipeline import LivePath

    live = LivePath.load(Settings(cascade=False), tmp_path)  # what serve/analyze --model-dir do
    assert live.card.version == "t-pruned"


def test_a_small_end_to_end_prune_writes_a_smaller_checkpoint_with_its_card(tmp_path):
    """A few steps on two short streams: the method runs through, the card says what it did."""
    from streaming.offline.prune import PrunePlan, prune_student

    plan = PrunePlan(out_dir=tmp_path / "p", epochs=2, batch=4, minutes=0.15, target_macs=0.5,
                     schedule=pruning.Schedule(peak=0.5, ramp=3), splits={"train": [101], "test": [301]},
                     cache=tmp_path / "cache")  # fmt: skip
    result = prune_student(plan)
    m, p = result.card.metrics, result.card.training["pruning"]
    assert m["macs_per_gop"] <= 0.5 * m["macs_per_gop_before"]
    assert m["params"] < m["params_before"] and p["max_output_gap_cut_vs_masked"] < 1e-3
    assert p["schedule"]["ramp_steps"] == 3 and len(p["history"]) == 2
    assert p["history"][-1]["chosen_at_zero"] == 1.0
    loaded, card = load_student(tmp_path / "p")
    assert card.sha256 == result.card.sha256 and pruning.macs_per_gop(loaded) == m["macs_per_gop"]
    assert np.isfinite(m["ms_per_gop_1_thread"])


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--criterion", "random"], "--criterion random: one of l1, l2, bn, taylor"),
        (["--method", "magic"], "--method magic: progressive or oneshot"),
        (["--model", "teacher"], "--model: student, ocr-detector or snapshot"),
        (["--model", "ocr-detector", "--criterion", "l3"], "--criterion l3: one of l1, l2, bn, taylor"),
        (["--model", "ocr-detector", "--method", "magic"], "--method magic: progressive or oneshot"),
    ],
)
def test_prune_refuses_bad_arguments_in_one_line(args, why, tmp_path):
    from tests.unit.test_cli import run

    r = run("prune", *args, "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and why in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "p").exists()
