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

    @torch.inference_mode()
    def __call__(self, window: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One window (W, ...) per input -> (category probabilities (C,), embedding (E,))."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        args = [torch.from_numpy(np.ascontiguousarray(window[k][None])) for k in INPUTS]
        logits, emb = self.net(*args)
        return torch.sigmoid(logits)[0].numpy(), emb[0].numpy()
