"""Pruning a network the project does not own: the live text detector as a torch module, cut by
dependency groups with the progressive penalty and its thresholding step."""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models import group_pruning as G
from models.onnx_torch import OnnxNet
from models.teacher.live_ocr import live_detector
from streaming.offline.prune_ocr import OcrPrunePlan, _head, schedule, to_input
from streaming.synth.assets import cover, photo


@pytest.fixture(scope="module")
def frame() -> torch.Tensor:
    import cv2

    img = cover(photo("coffee"), 1280, 720)
    cv2.putText(img, "SEND BTC DOUBLE IT", (80, 600), cv2.FONT_HERSHEY_DUPLEX, 2.0, (255, 255, 255), 3)
    return torch.from_numpy(to_input(img))


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_the_torch_form_of_the_detector_computes_its_map(frame):
    net = OnnxNet(live_detector()).eval()
    ref = _session(live_detector()).run(None, {"x": frame.numpy()})[0]
    with torch.no_grad():
        out = net(frame).numpy()
    assert ref.max() > 0.9 and np.abs(out - ref).max() < 1e-4


def test_cutting_zeroed_groups_keeps_the_masked_map_and_halves_the_macs(frame):
    net = OnnxNet(live_detector()).eval()
    full = G.macs(net, frame)
    cs = G.groups(net, frame, _head(net))
    G.choose(cs, "l1", 0.3, round_to=16)
    assert any(c.chosen for c in cs) and all(not c.chosen or (c.n - len(c.chosen)) % 16 == 0 for c in cs)
    G.zero_chosen(cs)
    assert all(float(c.norms(2)[c.chosen].sum()) == 0.0 for c in cs if c.chosen)
    with torch.no_grad():
        masked = net(frame)
    G.cut(net, frame, cs)
    with torch.no_grad():
        assert float((net(frame) - masked).abs().max()) < 1e-4
    assert full / G.macs(net, frame) > 1.9
    assert [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)][-1].out_channels == 1


def _tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    net.eval()
    return net, torch.randn(1, 3, 8, 8)


def test_thresholding_zeroes_exactly_the_chosen_channels_under_the_threshold():
    net, x = _tiny()
    cs = G.groups(net, x, [net[3]])
    (c,) = cs
    c.chosen = [0, 2]
    with torch.no_grad():  # channel 0 small, channel 2 large, channels 1 and 3 not chosen
        for p, dim, idx, _ in c.slices:
            p.index_fill_(dim, idx[torch.tensor([0])], 0.01)
            p.index_fill_(dim, idx[torch.tensor([1, 3])], 0.01)  # small but not chosen
    norms = c.norms(2).sqrt()
    zero = G.threshold_step(cs, shrink=float(norms[0]) * 1.01, threshold=1e-3)
    after = c.norms(2).sqrt()
    assert zero == 1 and float(after[0]) == 0.0
    assert float(after[2]) > 0 and torch.allclose(after[[1, 3]], norms[[1, 3]])


def test_the_penalty_weight_grows_on_its_recorded_schedule():
    plan = OcrPrunePlan(out_dir=Path("x"), steps=300, peak=0.05, ramp_share=2 / 3)
    w = [schedule(plan).weight(s) for s in range(0, 301)]
    assert w[0] == 0 and all(a <= b for a, b in itertools.pairwise(w))
    assert w[200] == pytest.approx(0.05) and w[300] == pytest.approx(0.05)
    assert w[100] == pytest.approx(0.05 / 4)


def test_a_small_prune_end_to_end_gives_a_detector_the_live_path_loads(tmp_path, frame):
    """A few steps on two training sources: a smaller ONNX detector, its card, and the cascade's
    reader running it (GOPWATCH_OCR_DETECTOR)."""
    from models.teacher.sources import OcrSource
    from streaming.offline.prune_ocr import OUTPUT, prune_detector

    plan = OcrPrunePlan(out_dir=tmp_path / "out", steps=6, batch=2, streams=1, sources=1, cache=tmp_path)
    card = prune_detector(plan, [frame.numpy()])
    assert card["macs_unpruned"] / card["macs"] > 1.9 and card["cut_vs_masked_max_gap"] < 1e-4
    assert card["schedule"]["ramp_steps"] == 4 and card["training_frames"] >= 8
    saved = json.loads((tmp_path / "out" / "ocr_det.card.json").read_text())
    assert saved["sha256"] == card["sha256"] and saved["method"] == "progressive"
    path = tmp_path / "out" / OUTPUT
    assert _session(path).run(None, {"x": frame.numpy()})[0].shape == (1, 1, 256, 480)
    reader = OcrSource(max_side=480, live=True, detector=path)
    reader.detect(cover(photo("coffee"), 1280, 720))  # runs (what it finds after 6 steps is not the point)
    assert str(reader._ocr.cfg.Det.model_path) == str(path)
    assert pickle.dumps(card)  # plain data
