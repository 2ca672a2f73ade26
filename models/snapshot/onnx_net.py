"""The still classifiers' screening copies run by ONNX Runtime, called as the PyTorch copies are.

Each copy (:mod:`models.snapshot.fold`) is exported in memory once per input layout (per chroma
subsampling for the compressed-domain network, grey included), with the batch and the block grid's
size left free. The graphs take channels-last input, (N, H, W, C), which is how the native reader
writes the coefficients, so a still's maps reach the session as views, without a copy. ONNX
Runtime packs the weights once where PyTorch's eager convolutions reorder them on every call,
which is most of the time of networks this small. The outputs equal the PyTorch copy's to float
rounding (tested for every sampling).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from models.runtime import cpu_session, export_graph
from models.snapshot.fold import FoldedSnapshotNet
from models.snapshot.net import RgbNet, SnapshotConfig, SnapshotNet


class _ChannelsLast(nn.Module):
    """``net`` with (N, H, W, C) inputs; ``sub`` fixed (the compressed-domain network's layout)."""

    def __init__(self, net: nn.Module, sub: str | None) -> None:
        super().__init__()
        self.net, self.sub = net, sub

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = [x.permute(0, 3, 1, 2) for x in xs]
        if self.sub is None:
            return self.net(*planes)
        if len(planes) == 1:
            return self.net(planes[0], None, None, self.sub)
        return self.net(planes[0], planes[1], planes[2], self.sub)


class OnnxStillNet:
    """A screening copy in ONNX Runtime: ``(y, cb, cr, sub)`` (compressed domain) or ``(x)``
    (pixels) in, as channels-last torch tensors; (scene logits, cue logits) out, as tensors."""

    def __init__(self, net: FoldedSnapshotNet | RgbNet, threads: int = 1) -> None:
        self.net = net
        self.cfg: SnapshotConfig = net.cfg
        self.threads = threads
        self._sessions: dict[str, Any] = {}

    def eval(self) -> OnnxStillNet:
        return self

    def _session(self, layout: str, example: list[torch.Tensor]) -> Any:
        names = [f"x{i}" for i in range(len(example))]
        module = _ChannelsLast(self.net, None if layout == "rgb" else layout)
        graph = export_graph(module, tuple(example), names, ["scene", "cue"],
                             {n: {0: "n", 1: "h", 2: "w"} for n in names})  # fmt: skip
        return cpu_session(graph, self.threads)

    def __call__(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.kind == "rgb":
            layout, planes = "rgb", [args[0]]
        else:
            y, cb, cr, sub = args
            layout, planes = ("grey", [y]) if cb is None or cr is None else (sub, [y, cb, cr])
        xs = [np.ascontiguousarray(p.detach().permute(0, 2, 3, 1).numpy(), np.float32) for p in planes]
        if layout not in self._sessions:
            self._sessions[layout] = self._session(layout, [torch.from_numpy(x) for x in xs])
        scene, cue = self._sessions[layout].run(None, {f"x{i}": x for i, x in enumerate(xs)})
        return torch.from_numpy(scene), torch.from_numpy(cue)


# anything the screening functions classify with: a trained network or a screening copy
StillNet = SnapshotNet | FoldedSnapshotNet | RgbNet | OnnxStillNet
