"""Inference runtime for the student: one thread by default (several times faster than two on
small CPUs), numpy in and out.

The live path runs the student through ONNX Runtime: at load the network (its batch norms folded)
is exported in memory as two graphs, the per-GOP encoder and the window's fusion and head, and
each gets a one-thread session. ONNX Runtime packs the weights once, where PyTorch's eager
convolutions reorder them on every call, which set most of a GOP's time in so small a network.
The outputs equal PyTorch's to float rounding (tested). ``backend="torch"`` runs the module itself.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from models.errors import ModelError
from models.folding import fold_batch_norms
from models.student import StudentNet

INPUTS = ("thumb", "maps", "series", "stats")
BACKENDS = ("onnxruntime", "torch")


class _Encoder(nn.Module):
    def __init__(self, net: StudentNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, thumb: torch.Tensor, maps: torch.Tensor, series: torch.Tensor,
                stats: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return self.net.encode_gops(thumb, maps, series, stats)


class _Fusion(nn.Module):
    def __init__(self, net: StudentNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.net.fuse(codes)
        return torch.sigmoid(self.net.forward_head(emb)), emb


def export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], outputs: list[str],
                 dynamic: dict[str, dict[int, str]]) -> bytes:  # fmt: skip
    """``module`` traced on ``args`` into an in-memory ONNX graph, the ``dynamic`` axes left free."""
    buf: Any = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=names, output_names=outputs,
                          dynamic_axes=dynamic, dynamo=False)  # fmt: skip
    return buf.getvalue()


def cpu_session(graph: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session for ``graph`` on ``threads`` threads, quiet."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


_GRAPHS: dict[str, tuple[bytes, bytes]] = {}  # a network's exported graphs, by _digest


def _digest(net: StudentNet) -> str:
    """The network's configuration and weights, hashed: a process that loads one checkpoint
    several times (tests, the evaluation's passes) exports it once."""
    h = hashlib.blake2b(repr(net.cfg).encode(), digest_size=16)
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


class StudentRuntime:
    def __init__(self, net: StudentNet, threads: int = 1, backend: str = "onnxruntime") -> None:
        if backend not in BACKENDS:
            raise ModelError(f"student runtime {backend!r}: one of {', '.join(BACKENDS)}")
        self.net = net.eval()
        self.threads = threads
        self.categories = net.cfg.categories
        self.backend = backend
        self._encoder: Any = None
        self._fusion: Any = None
        if backend == "onnxruntime":
            try:
                self._encoder, self._fusion = self._sessions()
            except (ImportError, RuntimeError, ValueError) as e:  # no exporter or runtime: slower, not broken
                logging.getLogger(__name__).warning("student runs on PyTorch (ONNX export failed: %s)", e)
                self.backend = "torch"

    def _sessions(self) -> tuple[Any, Any]:
        key = _digest(self.net)
        if key not in _GRAPHS:
            if len(_GRAPHS) >= 4:
                del _GRAPHS[next(iter(_GRAPHS))]
            _GRAPHS[key] = self._export()
        encoder, fusion = _GRAPHS[key]
        return cpu_session(encoder, self.threads), cpu_session(fusion, self.threads)

    def _export(self) -> tuple[bytes, bytes]:
        cfg = self.net.cfg
        folded: Any = fold_batch_norms(copy.deepcopy(self.net).eval())
        shapes = [(3, *cfg.thumb_hw), (cfg.map_channels, *cfg.grid_hw), (cfg.series_channels, cfg.series_len),
                  (cfg.stats_dim,)]  # fmt: skip
        gop = tuple(torch.zeros(1, *shape) for shape in shapes)
        encoder = export_graph(_Encoder(folded), gop, list(INPUTS), ["code"], {k: {0: "n"} for k in INPUTS})
        codes = torch.zeros(1, cfg.window, cfg.embed_dim)
        fusion = export_graph(_Fusion(folded), (codes,), ["codes"], ["probs", "emb"], {"codes": {1: "w"}})
        return encoder, fusion

    def _threads(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def __call__(self, window: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One window (W, ...) per input -> (category probabilities (C,), embedding (E,))."""
        return self.fuse(self._encode(window))

    def encode(self, gop: dict[str, np.ndarray]) -> np.ndarray:
        """One GOP's inputs (no window axis) -> its code (E,), for :meth:`fuse`."""
        return self._encode({k: gop[k][None] for k in INPUTS})[0]

    def _encode(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.ascontiguousarray(batch[k], np.float32) for k in INPUTS}
        if self._encoder is not None:
            return self._encoder.run(None, feed)[0]
        self._threads()
        with torch.inference_mode():
            return self.net.encode_gops(*(torch.from_numpy(feed[k]) for k in INPUTS)).numpy()

    def fuse(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A window's GOP codes (W, E) -> (category probabilities (C,), embedding (E,)): the same
        as calling the runtime on the window's inputs, with each GOP encoded once."""
        x = np.ascontiguousarray(codes[None], np.float32)
        if self._fusion is not None:
            probs, emb = self._fusion.run(None, {"codes": x})
            return probs[0], emb[0]
        self._threads()
        with torch.inference_mode():
            emb = self.net.fuse(torch.from_numpy(x))
            return torch.sigmoid(self.net.forward_head(emb))[0].numpy(), emb[0].numpy()
