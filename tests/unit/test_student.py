"""Student shapes and determinism, distillation on a tiny real run, checkpoint integrity, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.distill import Corpus, DistillConfig, distill, predict
from models.errors import CheckpointMismatchError, ModelError
from models.quality import average_precision, best_threshold, roc_auc
from models.registry import CARD, CHECKPOINT, ModelCard, load_student, save_student
from models.student import StudentConfig, n_params, student


def _inputs(n: int, cfg: StudentConfig, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = cfg.window
    return [
        torch.rand(n, w, 3, *cfg.thumb_hw, generator=g),
        torch.rand(n, w, cfg.map_channels, *cfg.grid_hw, generator=g),
        torch.rand(n, w, cfg.series_channels, cfg.series_len, generator=g),
        torch.rand(n, w, cfg.stats_dim, generator=g),
    ]


def test_shapes_size_and_determinism():
    cfg = StudentConfig()
    torch.manual_seed(1)
    a = student(cfg).eval()
    torch.manual_seed(1)
    b = student(cfg).eval()
    x = _inputs(3, cfg)
    with torch.inference_mode():
        la, ea = a(*x)
        lb, eb = b(*x)
    assert la.shape == (3, len(cfg.categories)) and ea.shape == (3, cfg.embed_dim)
    assert torch.equal(la, lb) and torch.equal(ea, eb)
    assert n_params(a) < 2_000_000


def test_gop_codes_computed_once_give_the_window_result():
    """The live path encodes each GOP once and fuses the window's codes: the same probabilities
    and embedding as the whole window through the network."""
    from models.runtime import INPUTS, StudentRuntime

    cfg = StudentConfig()
    torch.manual_seed(2)
    rt = StudentRuntime(student(cfg))
    window = {k: t[0].numpy() for k, t in zip(INPUTS, _inputs(1, cfg, seed=3), strict=True)}
    probs, emb = rt(window)
    codes = np.stack([rt.encode({k: v[i] for k, v in window.items()}) for i in range(cfg.window)])
    assert codes.shape == (cfg.window, cfg.embed_dim)
    p2, e2 = rt.fuse(codes)
    np.testing.assert_allclose(p2, probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(e2, emb, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_corpus(small_stream):
    from streaming.offline.corpus import build_stream
    from streaming.offline.training import to_corpus

    sc, data, _ = small_stream
    cfg = StudentConfig()
    s = build_stream(sc.name, data, sc.ground_truth(), cfg, ("flash", "qr", "motion"))
    return cfg, s, to_corpus([s, s], cfg.window)


def test_corpus_labels_and_teacher_line_up(tiny_corpus):
    _, s, corpus = tiny_corpus
    flash = 0  # photosensitive_flash is the first category
    assert s.labels[:, flash].tolist() == [1.0, 0.0, 0.0, 0.0]  # flash overlay 1-3 s covers GOP 0's half
    assert s.teacher_scores[0, flash] == 1.0
    assert corpus.inputs["thumb"].shape == (8, 4, 3, 90, 160)
    assert not np.isnan(corpus.teacher_feats).any()


def test_distillation_loss_decreases_on_a_tiny_real_run(tiny_corpus):
    cfg, _, corpus = tiny_corpus
    net, norm, history = distill(cfg, corpus, DistillConfig(epochs=12, batch=4, seed=3))
    assert history[-1] < 0.6 * history[0]
    assert norm["mean"].shape == (corpus.teacher_feats.shape[1],)
    probs = predict(net, corpus)
    assert probs.shape == (8, len(cfg.categories)) and ((probs >= 0) & (probs <= 1)).all()


def test_label_free_distillation_runs_on_teacher_targets_alone(tiny_corpus):
    cfg, _, corpus = tiny_corpus
    unlabelled = Corpus(corpus.inputs, corpus.teacher_feats, corpus.teacher_scores,
                        np.full_like(corpus.labels, np.nan))  # fmt: skip
    _, _, history = distill(cfg, unlabelled, DistillConfig(epochs=6, batch=4, seed=3))
    assert history[-1] < history[0]


def test_checkpoint_round_trip_and_tampering(tmp_path):
    cfg = StudentConfig()
    net = student(cfg).eval()
    card = ModelCard(name="t", version="v", config={}, sha256="", metrics={"x": 1})
    saved = save_student(
        tmp_path, net, card, {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32)}
    )
    loaded, card2 = load_student(tmp_path)
    assert card2.sha256 == saved.sha256 and card2.metrics == {"x": 1}
    x = _inputs(1, cfg)
    with torch.inference_mode():
        assert torch.equal(net(*x)[0], loaded(*x)[0])
    ckpt = tmp_path / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes() + b"tampered")
    with pytest.raises(CheckpointMismatchError, match="sha256"):
        load_student(tmp_path)
    save_student(tmp_path, net, card, {"mean": np.zeros(3, np.float32)})
    data = json.loads((tmp_path / CARD).read_text())
    data["config"]["width"] = 64
    (tmp_path / CARD).write_text(json.dumps(data))
    with pytest.raises(CheckpointMismatchError, match="config"):
        load_student(tmp_path)
    with pytest.raises(ModelError, match="make train"):
        load_student(tmp_path / "nowhere")


def test_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 2)  # ties on purpose
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    brute = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert roc_auc(y, s) == pytest.approx(brute)
    assert roc_auc(y, y.astype(float)) == 1.0 and np.isnan(roc_auc(np.ones(3), np.ones(3)))
    assert average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])) == pytest.approx((1 + 2 / 3) / 2)
    assert best_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.5)


def test_the_onnx_runtime_gives_the_modules_outputs():
    """The live path's ONNX Runtime copy (batch norms folded, two exported graphs) against the
    PyTorch module, on random weights with batch-norm statistics of their own and on a window
    shorter than the configured one (a stream's first GOPs)."""
    from models.runtime import INPUTS, StudentRuntime

    cfg = StudentConfig()
    torch.manual_seed(4)
    net = student(cfg)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    ort, eager = StudentRuntime(net), StudentRuntime(net, backend="torch")
    assert ort.backend == "onnxruntime"
    window = {k: t[0].numpy() for k, t in zip(INPUTS, _inputs(1, cfg, seed=5), strict=True)}
    for got, want in zip(ort(window), eager(window), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    codes = np.stack([ort.encode({k: v[i] for k, v in window.items()}) for i in range(2)])
    for got, want in zip(ort.fuse(codes), eager.fuse(codes), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
