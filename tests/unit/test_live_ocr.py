"""The live OCR detector's graph rewrites and its runtimes: fewer kernels, the same outputs."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.errors import ModelError
from models.teacher.live_ocr import (
    OpenVinoDetector,
    OpenVinoRecognizer,
    detector_session,
    fast_detector,
    live_detector,
    mobile_detector,
    rewrite,
)
from models.teacher.sources import OcrSource
from streaming.synth.assets import cover, photo


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _affine_then_conv(kernel: int) -> onnx.ModelProto:
    """x → HardSwish → Mul(0.7) → Add(-0.2) → Conv(kernel×kernel, same padding) → y."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, kernel, kernel)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")
    s = numpy_helper.from_array(np.array(0.7, np.float32), "s")
    t = numpy_helper.from_array(np.array(-0.2, np.float32), "t")
    pad = kernel // 2
    nodes = [
        helper.make_node("HardSwish", ["x"], ["h"]),
        helper.make_node("Mul", ["s", "h"], ["m"]),
        helper.make_node("Add", ["m", "t"], ["a"]),
        helper.make_node("Conv", ["a", "w", "b"], ["y"], kernel_shape=[kernel, kernel], pads=[pad] * 4),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w, b, s, t],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("kernel", "folded"), [(1, 1), (3, 0)])
def test_an_affine_is_folded_into_a_pointwise_convolution_only(kernel, folded):
    """Into a 1×1 convolution the fold is exact; a padded 3×3 one would see the shift where it pads
    zeros, so it is left alone."""
    model = _affine_then_conv(kernel)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32) * 4
    before = _session(model).run(None, {"x": x})[0]
    counts = rewrite(model)
    assert counts["pointwise_affine"] == folded
    assert len(model.graph.node) == 4 - 2 * folded
    assert np.allclose(_session(model).run(None, {"x": x})[0], before, atol=1e-5)


def test_the_shipped_detector_computes_the_same_map_with_fewer_kernels(tmp_path):
    src = mobile_detector()
    original = onnx.load(str(src))
    model = onnx.load(str(src))
    counts = rewrite(model)
    assert counts == {"hardswish": 24, "conv_affine": 28, "pointwise_affine": 10}
    assert len(model.graph.node) < len(original.graph.node) - 100
    img = cover(photo("astronaut"), 640, 360)
    cv2.putText(img, "FREE CRYPTO GIVEAWAY", (40, 300), cv2.FONT_HERSHEY_DUPLEX, 1.2, (255, 255, 0), 2)
    x = ((cv2.resize(img, (480, 256)).astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    a = _session(original).run(None, {"x": x})[0]
    b = _session(model).run(None, {"x": x})[0]
    assert a.max() > 0.9  # the caption is in the map
    assert np.abs(a - b).max() < 1e-3
    path = fast_detector(src, tmp_path)
    assert fast_detector(src, tmp_path) == path and path.stat().st_size > 0  # made once, then reused
    assert list(tmp_path.iterdir()) == [path]


def test_the_live_reader_uses_the_rewritten_detector_and_finds_the_same_lines():
    img = cover(photo("coffee"), 1280, 720)
    cv2.putText(img, "SEND BTC DOUBLE IT", (80, 600), cv2.FONT_HERSHEY_DUPLEX, 2.0, (255, 255, 255), 3)
    live = OcrSource(max_side=480, live=True)
    assert ".fast.onnx" in str(live._ocr.cfg.Det.model_path)
    plain = OcrSource(max_side=480, live=True)
    plain._ocr.text_det = None  # reloaded below from the wheel's own file
    plain._ocr.cfg.Det.model_path = str(mobile_detector())
    a, b = live.detect(img), plain.detect(img)
    assert len(a) >= 1 and len(a) == len(b)
    assert all(np.abs(p - q).max() <= 1.0 for p, q in zip(a, b, strict=True))


def test_the_front_finds_what_the_full_pipeline_finds():
    """The detection step alone gives the boxes rapidocr's whole call gives with recognition off,
    on frames with captions, with none, and of another shape (a portrait phone stream)."""
    reader = OcrSource(max_side=480, live=True)
    frames = [cover(photo("chelsea"), 1280, 720), cover(photo("rocket"), 360, 640)]
    for i, img in enumerate(frames):
        org = (20, img.shape[0] - 60)
        cv2.putText(img, "WIN AN IPHONE", org, cv2.FONT_HERSHEY_DUPLEX, 1.0 + i, (255,) * 3, 2)
    frames.append(np.full((720, 1280, 3), 30, np.uint8))
    for img in frames:
        res = reader._ocr(img, use_det=True, use_cls=False, use_rec=False)
        full = [] if res.boxes is None else [np.asarray(b, np.float32).reshape(4, 2) for b in res.boxes]
        fast = reader.detect(img)
        assert len(fast) == len(full)
        assert all(np.abs(p - q).max() <= 1.0 for p, q in zip(fast, full, strict=True))
    assert len(reader.detect(frames[0])) >= 1 and reader.detect(frames[2]) == []


def test_openvino_runs_the_detector_with_onnx_runtimes_outputs_and_boxes():
    """The shipped runtime (OpenVINO, f32) against ONNX Runtime on the same rewritten file: the
    same probability map to float tolerance, the same lines on a captioned frame, on a portrait
    frame (another input shape, another compiled model) and none on a blank one; bf16 still finds
    the caption."""
    path = live_detector()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 256, 480)).astype(np.float32)
    ov = OpenVinoDetector(path)
    assert np.abs(ov(x) - _session(str(path)).run(None, {"x": x})[0]).max() < 1e-3
    frames = [cover(photo("coffee"), 1280, 720), cover(photo("rocket"), 360, 640)]
    for i, img in enumerate(frames):
        cv2.putText(img, "SEND BTC DOUBLE IT", (20, img.shape[0] - 80), cv2.FONT_HERSHEY_DUPLEX, 1.0 + i,
                    (255, 255, 255), 3)  # fmt: skip
    frames.append(np.full((720, 1280, 3), 30, np.uint8))
    readers = {rt: OcrSource(max_side=480, live=True, runtime=rt) for rt in ("onnxruntime", "openvino")}
    for img in frames:
        a, b = (r.detect(img) for r in readers.values())
        assert len(a) == len(b)
        assert all(np.abs(p - q).max() <= 1.0 for p, q in zip(a, b, strict=True))
    assert readers["openvino"].detect(frames[0]) and not readers["openvino"].detect(frames[2])
    assert isinstance(readers["openvino"]._ocr.text_det.session, OpenVinoDetector)
    assert len(OcrSource(max_side=480, live=True, runtime="openvino-bf16").detect(frames[0])) >= 1


def test_the_openvino_detector_keeps_a_bounded_set_of_compiled_shapes():
    ov = OpenVinoDetector(live_detector())
    ov.MAX_SHAPES = 2
    for h in (64, 96, 128, 64):
        assert ov(np.zeros((1, 3, h, 96), np.float32)).shape[-2:] == (h, 96)
    assert list(ov._requests) == [(1, 3, 128, 96), (1, 3, 64, 96)]  # 96 dropped, 64 used last


def test_an_unknown_ocr_runtime_is_refused_and_onnx_runtime_keeps_rapidocrs_session():
    with pytest.raises(ModelError, match="OCR runtime 'tensorrt'"):
        detector_session(live_detector(), "tensorrt")
    assert detector_session(live_detector(), "onnxruntime") is None


def test_openvino_reads_the_lines_onnx_runtime_reads():
    """The recognizer compiled once for any line width: f32 gives ONNX Runtime's probabilities,
    and every runtime, bf16 included, reads the same text from captions of three sizes."""
    img = cover(photo("coffee"), 1280, 720)
    lines = ["SEND BTC DOUBLE IT", "WIN AN IPHONE", "scan to claim your prize"]
    for i, (line, scale) in enumerate(zip(lines, (2.0, 1.2, 0.9), strict=True)):
        cv2.putText(img, line, (40, 200 + 180 * i), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 3)
    readers = {rt: OcrSource(max_side=480, live=True, runtime=rt) for rt in ("onnxruntime", "openvino",
                                                                              "openvino-bf16")}  # fmt: skip
    quads = readers["onnxruntime"].detect(img)
    assert len(quads) >= 3
    read = {rt: r.recognize(img, quads) for rt, r in readers.items()}
    assert isinstance(readers["openvino"]._ocr.text_rec.session, OpenVinoRecognizer)
    assert not isinstance(readers["onnxruntime"]._ocr.text_rec.session, OpenVinoRecognizer)
    texts = {rt: [t for t, _ in v] for rt, v in read.items()}
    assert texts["openvino"] == texts["onnxruntime"] == texts["openvino-bf16"]
    assert any("BTC" in t for t in texts["onnxruntime"])
    for (_, a), (_, b) in zip(read["onnxruntime"], read["openvino"], strict=True):
        assert abs(a - b) < 0.01  # OpenVINO pads the line to a width step; ONNX Runtime does not
    # on the same padded input, f32 gives ONNX Runtime's probabilities
    crop = readers["onnxruntime"]._ocr.crop_text_regions(img, np.stack(quads[:1]))[0]
    x = readers["onnxruntime"]._ocr.text_rec.resize_norm_img(crop, 500 / 48)[None]
    step = OpenVinoRecognizer.WIDTH_STEP
    assert x.shape[-1] % step
    padded = np.pad(x, [(0, 0), (0, 0), (0, 0), (0, step - x.shape[-1] % step)])
    ort_probs = readers["onnxruntime"]._ocr.text_rec.session(padded)
    assert np.abs(readers["openvino"]._ocr.text_rec.session(x) - ort_probs).max() < 1e-3
