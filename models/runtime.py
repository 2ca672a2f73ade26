"""Inference runtime for the student: one thread by default (several times faster than two on
small CPUs), inference mode, numpy in and out."""

from __future__ import annotations

import numpy as np
import torch

from models.student import StudentNet

INPUTS = ("thumb", "maps", "series", "stats")


class StudentRuntime:
    def __init__(self, net: StudentNet, threads: int = 1) -> None:
        self.net = net.eval()
        self.threads = threads
        self.categories = net.cfg.categories

    def _threads(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    @torch.inference_mode()
    def __call__(self, window: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One window (W, ...) per input -> (category probabilities (C,), embedding (E,))."""
        self._threads()
        args = [torch.from_numpy(np.ascontiguousarray(window[k][None])) for k in INPUTS]
        logits, emb = self.net(*args)
        return torch.sigmoid(logits)[0].numpy(), emb[0].numpy()

    @torch.inference_mode()
    def encode(self, gop: dict[str, np.ndarray]) -> np.ndarray:
        """One GOP's inputs (no window axis) -> its code (E,), for :meth:`fuse`."""
        self._threads()
        args = [torch.from_numpy(np.ascontiguousarray(gop[k][None])) for k in INPUTS]
        return self.net.encode_gops(*args)[0].numpy()

    @torch.inference_mode()
    def fuse(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A window's GOP codes (W, E) -> (category probabilities (C,), embedding (E,)): the same
        as calling the runtime on the window's inputs, with each GOP encoded once."""
        self._threads()
        emb = self.net.fuse(torch.from_numpy(np.ascontiguousarray(codes[None], np.float32)))
        return torch.sigmoid(self.net.forward_head(emb))[0].numpy(), emb[0].numpy()
