"""An ONNX convolutional graph as a torch module, so Torch-Pruning can cut it and training can
distil into it; exported back to ONNX for ONNX Runtime.

Covers the operator set of the live text detector (PP-OCRv4 mobile, after
:func:`models.teacher.live_ocr.rewrite`): convolutions (grouped, transposed), batch norm, the
activations, elementwise Add and Mul (scalars become buffers), nearest Resize by constant scales,
Concat and global average pooling. A per-channel constant added to a convolution's output becomes
that convolution's bias, so pruning the convolution prunes it too. Anything else is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ModelError

_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "HardSwish": F.hardswish,
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "GlobalAveragePool": lambda x: x.mean(dim=(2, 3), keepdim=True),
}


class OnnxNet(nn.Module):
    """Runs the graph's nodes in order; convolutions and batch norms are real modules."""

    def __init__(self, path: Path) -> None:
        import onnx
        from onnx import helper, numpy_helper

        super().__init__()
        g = onnx.load(str(path)).graph
        vals = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        vals |= {
            n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"
        }
        self.mods = nn.ModuleDict()
        self.steps: list[tuple[str, Any, list[str], str]] = []  # (op, module key or argument, inputs, output)
        self.consts: dict[str, str] = {}  # graph value -> buffer name
        self.input, self.output = g.input[0].name, g.output[0].name
        for k, n in enumerate(g.node):
            a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            op, key = n.op_type, f"n{k}"
            if op == "Constant":
                continue
            if op in ("Conv", "ConvTranspose"):
                self.mods[key] = _conv(op, a, vals, n.input)
                self.steps.append(("mod", key, [n.input[0]], n.output[0]))
            elif op == "BatchNormalization":
                scale, shift, mean, var = (torch.from_numpy(vals[i].copy()) for i in n.input[1:])
                bn = nn.BatchNorm2d(len(scale), eps=a["epsilon"])
                bn.weight.data, bn.bias.data = scale, shift
                bn.running_mean, bn.running_var = mean, var
                self.mods[key] = bn
                self.steps.append(("mod", key, [n.input[0]], n.output[0]))
            elif op == "Add" and any(i in vals and vals[i].size > 1 for i in n.input):
                self._into_bias(n, vals)
            elif op in ("Add", "Mul"):
                for i in n.input:
                    if i in vals and i not in self.consts:
                        self.consts[i] = f"c{len(self.consts)}"
                        self.register_buffer(self.consts[i], torch.tensor(np.asarray(vals[i], np.float32)))
                self.steps.append((op, None, list(n.input), n.output[0]))
            elif op == "HardSigmoid":
                self.steps.append((op, (a["alpha"], a["beta"]), [n.input[0]], n.output[0]))
            elif op == "Resize" and a.get("mode", b"nearest") == b"nearest" and n.input[2] in vals:
                scales = tuple(float(x) for x in vals[n.input[2]][2:])
                self.steps.append((op, scales, [n.input[0]], n.output[0]))
            elif op == "Concat":
                self.steps.append((op, a["axis"], list(n.input), n.output[0]))
            elif op in _UNARY:
                self.steps.append((op, None, [n.input[0]], n.output[0]))
            else:
                raise ModelError(f"{path.name}: no torch form for ONNX {op} (node {n.name})")

    def _into_bias(self, n: Any, vals: dict[str, np.ndarray]) -> None:
        const = next(i for i in n.input if i in vals)
        src = next(i for i in n.input if i != const)
        at = next((j for j, s in enumerate(self.steps) if s[3] == src and s[0] == "mod"), -1)
        mod = self.mods[self.steps[at][1]] if at >= 0 else None
        if not isinstance(mod, nn.Conv2d | nn.ConvTranspose2d):
            raise ModelError(f"a per-channel constant after {src!r}, not after a convolution")
        bias = torch.from_numpy(vals[const].reshape(-1).astype(np.float32))
        if mod.bias is None:
            mod.bias = nn.Parameter(bias)
        else:
            mod.bias.data += bias
        op, key, ins, _ = self.steps[at]
        self.steps[at] = (op, key, ins, n.output[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input: x}
        for op, arg, ins, out in self.steps:
            xs = [getattr(self, self.consts[i]) if i in self.consts else env[i] for i in ins]
            if op == "mod":
                y = self.mods[arg](xs[0])
            elif op == "Add":
                y = xs[0] + xs[1]
            elif op == "Mul":
                y = xs[0] * xs[1]
            elif op == "HardSigmoid":
                y = torch.clamp(arg[0] * xs[0] + arg[1], 0.0, 1.0)
            elif op == "Resize":
                y = F.interpolate(xs[0], scale_factor=arg, mode="nearest")
            elif op == "Concat":
                y = torch.cat(xs, dim=arg)
            else:
                y = _UNARY[op](xs[0])
            env[out] = y
        return env[self.output]

    def export(self, path: Path, example: torch.Tensor) -> None:
        """To ONNX (opset 17), batch and spatial size left dynamic."""
        dyn = {0: "n", 2: "h", 3: "w"}
        self.eval()
        with warnings.catch_warnings():  # the TorchScript exporter: the newer one needs onnxscript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(self, (example,), str(path), input_names=["x"], output_names=["y"],
                              opset_version=17, dynamic_axes={"x": dyn, "y": dyn}, dynamo=False)  # fmt: skip


def _conv(op: str, a: dict[str, Any], vals: dict[str, np.ndarray], inputs: Any) -> nn.Module:
    w = torch.from_numpy(vals[inputs[1]].copy())
    b = vals.get(inputs[2]) if len(inputs) > 2 else None
    kernel = (int(w.shape[2]), int(w.shape[3]))
    groups, pads = a.get("group", 1), a.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise ModelError("asymmetric padding has no torch convolution")
    conv: nn.Conv2d | nn.ConvTranspose2d
    if op == "Conv":
        stride, dilation = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1)))
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], kernel, stride, (pads[0], pads[1]),
                         dilation, groups, bias=b is not None)  # fmt: skip
    else:
        conv = nn.ConvTranspose2d(w.shape[0], w.shape[1] * groups, kernel, tuple(a["strides"]),
                                  (pads[0], pads[1]), groups=groups, bias=b is not None)  # fmt: skip
    conv.weight.data = w
    if b is not None:
        assert conv.bias is not None
        conv.bias.data = torch.from_numpy(b.copy())
    return conv
