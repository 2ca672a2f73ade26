"""Stills as DCT coefficients: the reader's checks, its numbers, and the fusion's shapes."""

from __future__ import annotations

import json
import struct

import cv2
import jpeglib
import numpy as np
import pytest
import torch

from models.snapshot.jpeg import ZIGZAG, JpegError, coefficients, inspect
from models.snapshot.net import SnapshotNet, tensors
from streaming.synth.assets import photo


def _jpeg(rgb: np.ndarray, *flags: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), list(flags))
    assert ok
    return buf.tobytes()


def _picture(w: int = 320, h: int = 184) -> np.ndarray:
    return cv2.resize(photo("astronaut"), (w, h))


def test_coefficients_are_the_dct_of_the_decoded_blocks_under_known_tables(tmp_path):
    """A grey JPEG written with a known table (all 2s): each block's dequantised coefficients are
    the 8x8 DCT of its decoded, level-shifted pixels, to within the quantisation step."""
    grey = cv2.cvtColor(_picture(), cv2.COLOR_RGB2GRAY)
    grey = np.clip(grey, 40, 215)  # no clamping at decode
    path = tmp_path / "known.jpg"
    table = np.full((1, 8, 8), 2, np.uint16)
    jpeglib.from_spatial(grey[..., None]).write_spatial(str(path), qt=table)
    c = coefficients(path.read_bytes())
    assert c.cb is None and c.subsampling == "grey" and c.y.shape == (64, 23, 40)
    pixels = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    for by, bx in ((0, 0), (5, 7), (22, 39), (11, 20)):
        block = cv2.dct(pixels[by * 8 : by * 8 + 8, bx * 8 : bx * 8 + 8] - 128.0)
        # OpenCV's orthonormal DCT is the JPEG forward DCT divided by 8/sqrt(...) per axis: scale 1
        natural = np.empty(64, np.float32)
        natural[list(ZIGZAG)] = c.y[:, by, bx]  # channels are in zig-zag order
        assert np.abs(natural.reshape(8, 8) - block).max() <= 2.5
    assert c.y[0].std() > 10  # a real picture, not a flat field


@pytest.mark.parametrize(
    ("flag", "sub", "chroma"),
    [(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "4:2:0", (23, 40)),
     (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422, "4:2:2", (45, 40)),
     (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "4:4:4", (45, 80))],
)  # fmt: skip
def test_each_subsampling_is_brought_to_the_luma_grid(flag, sub, chroma):
    data = _jpeg(_picture(640, 360), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, flag)
    c = coefficients(data, keep=16)
    assert c.subsampling == sub and c.y.shape == (16, 45, 80) and c.cb.shape == (16, *chroma)
    net = SnapshotNet().eval()
    with torch.inference_mode():
        fused = net.fuse(*tensors(c))
        scene, cue = net(*tensors(c))
    assert fused.shape == (1, 2 * net.cfg.width, 45, 80)
    assert scene.shape == (1, len(net.cfg.scenes)) and cue.shape == (1, len(net.cfg.cues))


def test_progressive_and_grey_stills_are_read():
    c = coefficients(_jpeg(_picture(), cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    assert c.info.mode == "progressive" and c.cb is not None
    grey = cv2.cvtColor(_picture(), cv2.COLOR_RGB2GRAY)
    _ok, buf = cv2.imencode(".jpg", grey)
    assert coefficients(buf.tobytes()).info.components == 1


def _sof_at(data: bytes) -> int:
    for m in (b"\xff\xc0", b"\xff\xc2"):
        if (i := data.find(m)) > 0:
            return i
    raise AssertionError("no SOF")


def _with(data: bytes, at: int, patch: bytes) -> bytes:
    return data[:at] + patch + data[at + len(patch) :]


def test_bad_stills_are_refused_with_the_reason_before_decoding():
    good = _jpeg(_picture())
    sof = _sof_at(good)
    cases = {
        b"GIF89a not a jpeg": "no start-of-image",
        good[: len(good) // 2]: "truncated",
        _with(good, sof + 1, b"\xc9"): "arithmetic-coded JPEG is not supported",
        _with(good, sof + 5, struct.pack(">H", 60000)): "outside 1..8192",
        _with(good, sof + 9, b"\x04"): "CMYK",
        _with(good, sof + 4, b"\x0c"): "12-bit samples",
        b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9": "expected a marker",
    }
    for data, why in cases.items():
        with pytest.raises(JpegError, match=why):
            coefficients(data)
    assert inspect(good).width == 320


def test_damaged_entropy_data_is_an_error_or_a_reading_never_a_crash():
    good = bytearray(_jpeg(_picture()))
    rng = np.random.default_rng(3)
    for _ in range(200):
        b = bytearray(good)
        for _ in range(4):
            b[int(rng.integers(600, len(b) - 2))] = int(rng.integers(0, 256))
        try:
            c = coefficients(bytes(b))
            assert np.isfinite(c.y).all()
        except JpegError as e:
            assert str(e).startswith("damaged") and "/dev/shm" not in str(e) and "/tmp" not in str(e)


def test_labelled_stills_train_a_classifier_that_answers_every_class(tmp_path):
    """A few steps on a handful of synthetic stills: labels from the script, a checkpoint that
    round-trips with its sha256, and a verdict with a probability per scene and cue."""
    from models.snapshot.net import CUES, SCENES, load_snapshot
    from streaming import screening
    from streaming.offline import stills

    made = list(stills.synthetic_stills([1, 2], per_stream=4))
    assert len(made) == 10 and {s.scene for s in made} >= {SCENES.index("black")}
    assert all(inspect(s.jpeg).width in {w for w, _ in stills.SIZES} for s in made)
    emb = stills.teacher_embeddings(made[:3])  # the RGB teacher's view, distilled into the features
    assert emb.shape == (3, 1280) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4)
    net = stills.train(made, epochs=1, batch=4, teacher=0.5)
    stills.save(tmp_path, net, {"name": "test"})
    loaded, _card = load_snapshot(tmp_path)
    v = screening.classify(loaded, coefficients(made[0].jpeg, keep=loaded.cfg.coefficients))
    assert v["scene"] in SCENES and set(v["cues"]) == set(CUES)  # type: ignore[arg-type]
    assert abs(sum(v["scenes"].values()) - 1) < 1e-3  # type: ignore[attr-defined]
    (tmp_path / "snapshot.pt").write_bytes((tmp_path / "snapshot.pt").read_bytes() + b"x")
    with pytest.raises(Exception, match="sha256"):
        load_snapshot(tmp_path)


def test_a_weight_average_returns_the_average_not_the_last_step():
    """``ema``: the returned weights are the moving average of the steps' weights. With a decay
    near 1 the average hardly leaves the first step's weights, so it stays far closer to the
    initialisation than the last step of the same run (same seed, same batches)."""
    from models.snapshot.net import SnapshotConfig, SnapshotNet
    from streaming.offline import stills

    made = list(stills.synthetic_stills([1, 2, 3], per_stream=4))
    torch.manual_seed(0)
    first = SnapshotNet(SnapshotConfig(width=16, kind="dct", coefficients=16))
    init, weights = first.state_dict(), [k for k, _ in first.named_parameters()]  # not the BN statistics
    plain = stills.train(made, epochs=3, batch=4, seed=0).state_dict()
    averaged = stills.train(made, epochs=3, batch=4, seed=0, ema=0.9999).state_dict()

    def moved(sd: dict[str, torch.Tensor]) -> float:
        return sum(float((sd[k] - init[k]).norm()) for k in weights)

    assert moved(averaged) < 0.3 * moved(plain)  # measured 0.2 (0.97 with a decay of 0.5)
    assert all(torch.isfinite(v).all() for v in averaged.values() if v.is_floating_point())


def test_snapshots_classify_reports_each_still_and_refuses_a_bad_one_in_one_line(tmp_path):
    from streaming.offline import stills
    from tests.unit.test_cli import run

    made = list(stills.synthetic_stills([3], per_stream=3))
    model = tmp_path / "model"
    stills.save(model, stills.train(made, epochs=1, batch=2), {"name": "test"})
    folder = tmp_path / "stills"
    folder.mkdir()
    for i, s in enumerate(made):
        (folder / f"s{i}.jpg").write_bytes(s.jpeg)
    (folder / "broken.jpg").write_bytes(made[0].jpeg[:300])
    r = run("snapshots", "classify", str(folder), "--json", "--model-dir", str(model))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == len(made) + 1
    assert [row["error"] for row in rows if "error" in row] == ["truncated (no end-of-image marker)"]
    assert all(row["scene"] in SCENES_ALL for row in rows if "error" not in row)
    one = run("snapshots", "classify", str(folder / "broken.jpg"), "--model-dir", str(model))
    assert one.returncode == 2 and len(one.stderr.strip().splitlines()) == 1 and "truncated" in one.stderr


SCENES_ALL = ("game", "screen", "talking_head", "natural", "black")


def test_the_shipped_classifier_scores_its_card_on_the_held_out_stills():
    """The shipped checkpoint, re-scored here on its held-out stills (synthetic seeds 9001-9040
    and the real photographs training never saw), gives its card's numbers and stays above the
    floors its README states."""
    from models.registry import SHIPPED
    from models.snapshot.net import load_snapshot
    from streaming.offline.stills import accuracy, real_stills, synthetic_stills

    net, card = load_snapshot(SHIPPED)
    per_stream = card["data"]["stills_per_stream"]  # type: ignore[index]
    synthetic = accuracy(net, list(synthetic_stills(list(range(9001, 9041)), per_stream, 1)))
    real = accuracy(net, list(real_stills(0)))
    recorded = card["metrics"]  # type: ignore[index]
    for got, split in ((synthetic, "synthetic_held_out"), (real, "real_held_out")):
        for k, v in got.items():
            assert v == pytest.approx(recorded[split][k], abs=0.02), (split, k)  # type: ignore[index]
    assert synthetic["scene_accuracy"] >= 0.75 and synthetic["qr_code_accuracy"] >= 0.95
    assert (
        real["qr_code_accuracy"] >= 0.9
        and real["scene_accuracy"] >= 0.55
        and real["large_text_accuracy"] >= 0.75
    )


def _with_qr(img: np.ndarray, height: float) -> np.ndarray:
    import segno

    img = img.copy()
    m = np.pad(np.array(segno.make("https://pay.example/x", error="m").matrix, dtype=bool), 4)
    side = int(img.shape[0] * height)
    tile = cv2.resize(np.where(m, 0, 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    img[img.shape[0] // 4 : img.shape[0] // 4 + side, -side - 40 : -40] = tile[..., None]
    return img


def _qr_cue(height: float, qr_reader: bool = True) -> list[float]:
    from models.registry import SHIPPED
    from models.snapshot.fold import for_inference
    from models.snapshot.net import load_snapshot
    from streaming.screening import classify_jpeg
    from streaming.synth.assets import cover

    net = for_inference(load_snapshot(SHIPPED)[0])
    cues = []
    for name in ("coffee", "astronaut", "chelsea", "rocket"):
        still = _jpeg(_with_qr(cover(photo(name), 1280, 720), height), cv2.IMWRITE_JPEG_QUALITY, 85)
        cues.append(classify_jpeg(net, still, qr_reader)["cues"]["qr_code"])  # type: ignore[index]
    return cues


def test_the_shipped_classifier_sees_a_qr_code_a_third_of_the_frame_high():
    assert min(_qr_cue(0.3, qr_reader=False)) >= 0.5


@pytest.mark.parametrize("height", [0.3, 0.5, 0.7])
def test_the_tier_reads_a_qr_code_from_the_quarter_size_luma_the_reader_makes(height):
    """On 16 coefficients a code half the frame high is mostly flat blocks, which the network
    scores under 0.1; zxing-cpp reads it in the quarter-size luma the coefficient reader writes."""
    assert _qr_cue(height) == [1.0] * 4


def test_the_qr_reader_changes_no_verdict_on_held_out_stills_without_a_code():
    from models.registry import SHIPPED
    from models.snapshot.net import load_snapshot
    from streaming.offline.stills import real_stills
    from streaming.screening import classify_jpeg

    net = load_snapshot(SHIPPED)[0]
    plain = [s for s in real_stills(0) if not s.cues[0]]
    assert len(plain) >= 20
    for s in plain:
        assert classify_jpeg(net, s.jpeg, True) == classify_jpeg(net, s.jpeg, False)


@pytest.mark.parametrize(
    "flags",
    [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
     [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422],
     [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]],
)  # fmt: skip
def test_the_native_reader_gives_jpeglibs_coefficients_exactly(flags):
    from models.snapshot import jpeg

    assert jpeg._native() is not None, "make setup builds models/snapshot/libgwdct.so.1 (gcc, libjpeg-turbo)"
    data = _jpeg(_picture(641, 359), *flags)  # sizes that are not multiples of a block
    info = inspect(data)
    for keep in (64, 16, 1):  # the lowest frequencies: the first channels of zig-zag order
        native, reference = (
            jpeg._read_native(jpeg._native(), data, info, False, keep),
            jpeg._read_jpeglib(data, info, keep),
        )
        for a, b in ((native.y, reference.y), (native.cb, reference.cb), (native.cr, reference.cr)):
            assert a.shape == b.shape and a.shape[0] == keep and np.array_equal(a, b)
    # the quarter-size luma: the same bytes from both readers, and libjpeg's own 1/4 decode to
    # within its rounding (it samples the block's low frequencies where this averages them)
    quarter = jpeg._read_native(jpeg._native(), data, info, True, 16, True).quarter
    assert np.array_equal(quarter, jpeg._read_jpeglib(data, info, 16, True).quarter)
    scaled = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    assert quarter.shape == scaled.shape and np.abs(quarter.astype(int) - scaled).mean() < 1.0
    native, reference = jpeg._read_native(jpeg._native(), data, info, False), jpeg._read_jpeglib(data, info)
    logged = coefficients(data, log_scaled=True)
    assert logged.log_scaled and np.allclose(
        logged.y, np.sign(reference.y) * np.log1p(np.abs(reference.y)), atol=1e-5
    )
    grey = cv2.imencode(".jpg", cv2.cvtColor(_picture(), cv2.COLOR_RGB2GRAY))[1].tobytes()
    assert np.array_equal(jpeg._read_native(jpeg._native(), grey, inspect(grey), False).y,
                          jpeg._read_jpeglib(grey, inspect(grey)).y)  # fmt: skip


def test_the_native_log_scale_holds_past_its_table():
    """The reader looks the log scale of a dequantised value up in a table of |v| <= 4096 and
    computes the rest: a JPEG whose luma steps are all raised to 255 (the same entropy data, so
    values reach hundreds of thousands) gets the log of jpeglib's values on both sides of it."""
    from models.snapshot import jpeg

    data = bytearray(_jpeg(_picture()))
    at = data.index(b"\xff\xdb")  # the first quantisation table: 8-bit steps, table 0 (luma)
    assert data[at + 4] == 0x00
    data[at + 5 : at + 5 + 64] = bytes([255]) * 64
    raised = bytes(data)
    reference = jpeg._read_jpeglib(raised, inspect(raised), 16)
    assert np.abs(reference.y).max() > 4096 and (np.abs(reference.y) <= 4096).mean() > 0.5
    logged = coefficients(raised, log_scaled=True, keep=16)
    want = np.sign(reference.y) * np.log1p(np.abs(reference.y))
    assert np.allclose(logged.y, want, rtol=1e-6, atol=1e-5)


def test_damaged_entropy_data_is_refused_by_the_native_reader_with_libjpegs_reason():
    good = _jpeg(_picture())
    cut = good[: len(good) - 600] + b"\xff\xd9"  # the end marker is there, the data is not
    with pytest.raises(JpegError, match="damaged"):
        coefficients(cut)


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
@pytest.mark.parametrize("size", [(640, 360), (641, 359), (333, 217)])
def test_the_screening_copy_gives_the_trained_networks_outputs_for_every_sampling(size, runtime):
    """The chroma path composed into the first convolution and the batch norms folded
    (:mod:`models.snapshot.fold`), run by ONNX Runtime or PyTorch: the same logits, for 4:2:0,
    4:2:2, 4:4:4 and grey, at sizes that are not multiples of a block; the pixel baseline's
    copy too. One ONNX Runtime copy serves every size (its graphs leave the grid's size free)."""
    from models.snapshot.fold import channels_last, for_inference
    from models.snapshot.net import RgbNet, SnapshotConfig, rgb_tensor
    from streaming.screening import batch

    torch.manual_seed(0)
    net, rgb = SnapshotNet().eval(), RgbNet(SnapshotConfig(kind="rgb")).eval()
    for m in [*net.modules(), *rgb.modules()]:  # trained-looking statistics and biases
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, torch.nn.ConvTranspose2d):
            m.bias.data.uniform_(-1, 1)
    folded, fused = for_inference(net, runtime), for_inference(rgb, runtime)
    pic = _picture(*size)
    subs = {cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420: "4:2:0", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422: "4:2:2",
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444: "4:4:4"}  # fmt: skip
    stills = [_jpeg(pic, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, f) for f in subs]
    stills.append(cv2.imencode(".jpg", cv2.cvtColor(pic, cv2.COLOR_RGB2GRAY))[1].tobytes())
    with torch.inference_mode():
        for data, sub in zip(stills, [*subs.values(), "grey"], strict=True):
            y, cb, cr, got_sub = batch([coefficients(data, log_scaled=True, keep=16)])
            assert got_sub == sub
            want = net(y, cb, cr, sub)
            have = folded(channels_last(y), channels_last(cb), channels_last(cr), sub)
            for a, b in zip(want, have, strict=True):
                assert torch.allclose(a, b, atol=1e-5), (sub, (a - b).abs().max())
        x = rgb_tensor(stills[0])[None]
        assert torch.allclose(rgb(x)[0], fused(channels_last(x))[0], atol=1e-5)


def test_the_onnx_runtime_copy_keeps_a_session_per_still_size_and_drops_the_oldest():
    """A shape seen a second time gets a session with its sizes fixed (ONNX Runtime fuses more
    when it knows them; a first sighting runs on the graph with free sizes, so ever new sizes cost
    no session each); the most recent ``SHAPES`` are kept; every call gives the same logits."""
    from models.snapshot.fold import channels_last, for_inference
    from streaming.screening import batch

    torch.manual_seed(0)
    net = SnapshotNet().eval()
    screening = for_inference(net)
    screening.SHAPES = 2  # type: ignore[union-attr]
    sizes = [(320, 184), (336, 200), (352, 216), (400, 240)] * 2 + [(320, 184)]
    with torch.inference_mode():
        for w, h in sizes:
            y, cb, cr, sub = batch([coefficients(_jpeg(_picture(w, h)), log_scaled=True, keep=16)])
            got = screening(channels_last(y), channels_last(cb), channels_last(cr), sub)
            for a, b in zip(net(y, cb, cr, sub), got, strict=True):
                assert torch.allclose(a, b, atol=1e-5)
    kept = [key[1] for key in screening._sessions]  # type: ignore[union-attr]
    assert kept == [(1, 30, 50, 16), (1, 23, 40, 16)]  # the 400x240 and the 320x184 stills' luma grids
    assert list(screening._free) == ["4:2:0"]  # type: ignore[union-attr]


@pytest.mark.parametrize("sub", ["4:2:0", "4:2:2", "4:4:4"])
def test_the_chroma_deconvolution_is_computed_exactly_as_a_1x1_convolution_and_depth_to_space(sub):
    from models.snapshot.net import UPSAMPLE, _deconv

    s = UPSAMPLE[sub]
    layer = torch.nn.ConvTranspose2d(64, 8, kernel_size=s, stride=s)
    x = torch.randn(2, 64, 23, 40)
    with torch.inference_mode():
        assert torch.allclose(_deconv(layer, x), layer(x), atol=1e-5)


def test_the_native_reading_reaches_the_network_channels_last_without_a_copy():
    """The native reader writes each block's coefficients side by side (channels-last), and a
    still's input tensors are views of that memory in the layout the screening copy takes: no
    stacking and no conversion between the reader and the first convolution."""
    from models.snapshot.jpeg import _native
    from streaming.screening import batch

    if _native() is None:
        pytest.skip("the native reader is not built (make setup)")
    c = coefficients(_jpeg(cv2.resize(photo("astronaut"), (1280, 720))), log_scaled=True, keep=16)
    y, cb, cr, sub = batch([c])
    assert sub == "4:2:0" and y.shape == (1, 16, 90, 160) and cb is not None and cr is not None
    for t, plane in ((y, c.y), (cb, c.cb), (cr, c.cr)):
        assert t.is_contiguous(memory_format=torch.channels_last)
        assert np.shares_memory(t.numpy(), plane)
