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

from collections import Counter, OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from models.runtime import cpu_session, export_graph
from models.snapshot.fold import FoldedSnapshotNet
from models.snapshot.net import RgbNet, SnapshotConfig, SnapshotNet


class _ChannelsLast(nn.Module):
    """``net`` with (N, H, W, C) inputs; ``sub`` fixed (the compressed-domain network's layout)."""

    def __init__(self, net: FoldedSnapshotNet | RgbNet, sub: str | None) -> None:
        super().__init__()
        self.net, self.sub = net, sub

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = [x.permute(0, 3, 1, 2) for x in xs]
        if self.sub is None:
            return self.net(*planes)
        assert isinstance(self.net, FoldedSnapshotNet)
        if len(planes) == 1:
            return self.net.cropped(planes[0], None, None, self.sub)
        return self.net.cropped(planes[0], planes[1], planes[2], self.sub)


class OnnxStillNet:
    """A screening copy in ONNX Runtime: ``(y, cb, cr, sub)`` (compressed domain) or ``(x)``
    (pixels) in, as channels-last torch tensors; (scene logits, cue logits) out, as tensors.

    Each input layout is exported once with its sizes free, and an input shape seen a second
    time gets its own session of that graph with the sizes fixed (the most recent :data:`SHAPES`
    kept): only with every size known does ONNX Runtime add the chroma convolutions' outputs
    inside them and run the rest in its blocked layout. A platform's stills come in a handful of
    sizes; a still of a size not seen before runs on the graph with free sizes, so stills of ever
    new sizes cost no session each (about 5 ms)."""

    SHAPES = 16
    SEEN = 4096  # shapes counted before the count starts again

    def __init__(self, net: FoldedSnapshotNet | RgbNet, threads: int = 1) -> None:
        self.net = net
        self.cfg: SnapshotConfig = net.cfg
        self.threads = threads
        self._graphs: dict[str, bytes] = {}
        self._free: dict[str, Any] = {}  # per layout, the graph with its sizes free
        self._sessions: OrderedDict[tuple[object, ...], Any] = OrderedDict()  # per shape, sizes fixed
        self._seen: Counter[tuple[object, ...]] = Counter()

    def eval(self) -> OnnxStillNet:
        return self

    def _session(self, layout: str, xs: list[np.ndarray]) -> Any:
        key = (layout, *(x.shape for x in xs))
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        names = [f"x{i}" for i in range(len(xs))]
        if layout not in self._graphs:
            module = _ChannelsLast(self.net, None if layout == "rgb" else layout)
            free = {n: {0: "n", 1: f"h{n}", 2: f"w{n}"} for n in names}
            example = tuple(torch.from_numpy(x) for x in xs)
            self._graphs[layout] = export_graph(module, example, names, ["scene", "cue"], free)
            self._free[layout] = cpu_session(self._graphs[layout], self.threads)
        if len(self._seen) >= self.SEEN:
            self._seen.clear()
        self._seen[key] += 1
        if self._seen[key] < 2:
            return self._free[layout]
        self._sessions[key] = cpu_session(_fixed(self._graphs[layout], [x.shape for x in xs]), self.threads)
        if len(self._sessions) > self.SHAPES:
            self._sessions.popitem(last=False)
        return self._sessions[key]

    def __call__(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.kind == "rgb":
            layout, planes = "rgb", [args[0]]
        else:
            y, cb, cr, sub = args
            layout, planes = ("grey", [y]) if cb is None or cr is None else (sub, [y, cb, cr])
            if len(planes) == 3:  # the graph takes the chroma rows and columns it reads
                assert isinstance(self.net, FoldedSnapshotNet)
                rows, cols = self.net.chroma_grid(y.shape[2], y.shape[3], sub)
                planes[1:] = [p[:, :, :rows, :cols] for p in planes[1:]]
        xs = [np.ascontiguousarray(p.detach().permute(0, 2, 3, 1).numpy(), np.float32) for p in planes]
        scene, cue = self._session(layout, xs).run(None, {f"x{i}": x for i, x in enumerate(xs)})
        return torch.from_numpy(scene), torch.from_numpy(cue)


def _fixed(graph: bytes, shapes: list[tuple[int, ...]]) -> bytes:
    """``graph`` with its inputs' free sizes set to ``shapes``."""
    import onnx

    model = onnx.load_from_string(graph)
    for inp, shape in zip(model.graph.input, shapes, strict=True):
        for dim, size in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
            dim.ClearField("dim_param")
            dim.dim_value = size
    return model.SerializeToString()


# anything the screening functions classify with: a trained network or a screening copy
StillNet = SnapshotNet | FoldedSnapshotNet | RgbNet | OnnxStillNet
