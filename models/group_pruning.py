"""Progressive-sparsity structured pruning of any convolutional network, by dependency group.

:mod:`models.pruning` does this for the student, whose branches it knows by name. This module does
it for a network it does not know (the live text detector, converted by :mod:`models.onnx_torch`):
Torch-Pruning's dependency graph says which channels are *coupled* (a convolution's output
channel, its batch norm, the depthwise convolution and the residual adds that share it, the next
layers' input channels) and each such set is one group, pruned together. Per group:

1. **Choose**: rank the root's channels by the group's aggregated importance (L1 or L2 norm of
   every coupled slice, batch-norm scale, or first-order Taylor ``|w·∂L/∂w|``) and choose the
   least important share, rounding what is kept to a multiple of ``round_to`` (ONNX Runtime's
   blocked convolutions pad channels to 8 or 16: an odd count saves multiply-adds but no time).
2. **Penalty**: the chosen channels' group norms (every coupled slice together), added to the
   loss with a weight that grows over training.
3. **Threshold**: after each optimiser step, shrink each chosen channel's slices toward zero and
   set those under the threshold to exactly zero.
4. **Cut**: the zeroed channels removed physically with everything coupled to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from models.pruning import Schedule

CRITERIA = ("l1", "l2", "bn", "taylor")
Example = torch.Tensor | tuple[torch.Tensor, ...]  # the network's input, or its inputs


@dataclass
class Coupled:
    """One dependency group: its root convolution, how many channels it has, the slices of every
    coupled parameter (tensor, dimension, member index per root channel), and the chosen."""

    root: nn.Module
    handler: Callable[..., object]
    n: int
    slices: list[tuple[torch.Tensor, int, torch.Tensor, str]]  # kind: weight, bias, bn_scale, bn_shift
    chosen: list[int] = field(default_factory=list)

    def norms(self, power: int = 2) -> torch.Tensor:
        """Per root channel: the sum over slices of |w|^power."""
        out = torch.zeros(self.n)
        for p, dim, idx, _ in self.slices:
            v = p.detach().index_select(dim, idx).abs().pow(power)
            out += v.transpose(0, dim).reshape(len(idx), -1).sum(1)
        return out


def _slices(group: tp.Group) -> list[tuple[torch.Tensor, int, torch.Tensor, str]]:
    """(parameter, channel dimension, index of each root channel in it) for the group's members."""
    out = []
    for item in group:
        dep, idxs, root_idxs = item.dep, item.idxs, item.root_idxs
        m, fn = dep.target.module, dep.handler
        order = np.argsort(root_idxs)  # member positions in root-channel order
        idx = torch.as_tensor(np.asarray(idxs)[order], dtype=torch.long)
        out_fn = getattr(fn, "__name__", "") == "prune_out_channels"
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            transposed = isinstance(m, nn.ConvTranspose2d)
            if out_fn:
                out.append((m.weight, 1 if transposed else 0, idx, "weight"))
                if m.bias is not None:
                    out.append((m.bias, 0, idx, "bias"))
            elif transposed or m.groups == 1:  # a depthwise input channel is its output channel
                out.append((m.weight, 0 if transposed else 1, idx, "weight"))
        elif isinstance(m, nn.BatchNorm2d) and out_fn:
            out += [(m.weight, 0, idx, "bn_scale"), (m.bias, 0, idx, "bn_shift")]
    return out


def groups(net: nn.Module, example: Example, keep: list[nn.Module]) -> list[Coupled]:
    """The network's prunable groups (``keep``: modules whose output channels stay, e.g. the head's)."""
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    out = []
    for g in dg.get_all_groups(ignored_layers=keep, root_module_types=[nn.Conv2d, nn.ConvTranspose2d]):
        root = g[0].dep
        out.append(Coupled(root.target.module, root.handler, len(g[0].root_idxs), _slices(g)))
    return out


def importance(c: Coupled, criterion: str) -> np.ndarray:
    if criterion in ("l1", "l2"):
        return c.norms(1 if criterion == "l1" else 2).numpy()
    if criterion == "bn":
        scales = [p.detach()[idx].abs() for p, _, idx, kind in c.slices if kind == "bn_scale"]
        return torch.stack(scales).sum(0).numpy() if scales else c.norms(2).numpy()
    if criterion == "taylor":  # needs .grad from a backward pass of the training loss
        out = torch.zeros(c.n)
        for p, dim, idx, _ in c.slices:
            if p.grad is not None:
                v = (p.detach() * p.grad).index_select(dim, idx).abs()
                out += v.transpose(0, dim).reshape(len(idx), -1).sum(1)
        return out.numpy()
    raise ValueError(f"criterion {criterion!r}: one of {', '.join(CRITERIA)}")


def choose(cs: list[Coupled], criterion: str, share: float, round_to: int = 16) -> None:
    """In every group over ``round_to`` channels, the least important ``share`` (what is kept
    rounded to a multiple of ``round_to``, at least one multiple)."""
    for c in cs:
        c.chosen = []
        if c.n <= round_to:
            continue
        kept = max(round_to, round(c.n * (1 - share) / round_to) * round_to)
        if kept < c.n:
            c.chosen = sorted(
                int(i) for i in np.argsort(importance(c, criterion), kind="stable")[: c.n - kept]
            )


def _chosen_norms(c: Coupled) -> torch.Tensor:
    idx = torch.as_tensor(c.chosen, dtype=torch.long)
    total = torch.zeros(len(idx))
    for p, dim, at, _ in c.slices:
        v = p.index_select(dim, at[idx]).pow(2)
        total = total + v.transpose(0, dim).reshape(len(idx), -1).sum(1)
    return (total + 1e-12).sqrt()


def penalty(cs: list[Coupled]) -> torch.Tensor:
    """The group-lasso term: the sum of the chosen channels' group norms (differentiable)."""
    terms = [_chosen_norms(c).sum() for c in cs if c.chosen]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@torch.no_grad()
def threshold_step(cs: list[Coupled], shrink: float, threshold: float) -> int:
    """The proximal step: each chosen channel's slices scaled by ``max(0, 1 - shrink / norm)``,
    and set to zero under ``threshold``. Returns how many chosen channels are at zero."""
    zero = 0
    for c in cs:
        if not c.chosen:
            continue
        norms = _chosen_norms(c)
        scale = torch.clamp(1 - shrink / norms, min=0.0)
        scale[norms * scale < threshold] = 0.0
        zero += int((scale == 0).sum())
        idx = torch.as_tensor(c.chosen, dtype=torch.long)
        for p, dim, at, _ in c.slices:
            shape = [1] * p.dim()
            shape[dim] = len(idx)
            p.index_copy_(dim, at[idx], p.index_select(dim, at[idx]) * scale.reshape(shape))
    return zero


@torch.no_grad()
def zero_chosen(cs: list[Coupled]) -> None:
    for c in cs:
        for p, dim, at, _ in c.slices:
            if c.chosen:
                p.index_fill_(dim, at[torch.as_tensor(c.chosen, dtype=torch.long)], 0.0)


@dataclass
class Constraint:
    """Steps 2 and 3 over a training run: the penalty added to each step's loss with the
    schedule's weight, the thresholding after each optimiser step until the ramp's end, and the
    chosen held at zero from then on (from the start for ``method="oneshot"``, the baseline).
    Records the step at which every chosen channel was at zero and how many the ramp's end forced."""

    cs: list[Coupled]
    schedule: Schedule
    method: str  # progressive or oneshot
    shrink: float  # group norms shrink by shrink x weight per step
    zero_at: int | None = None
    forced: int = 0

    def __post_init__(self) -> None:
        if self.method == "oneshot":
            zero_chosen(self.cs)

    def _weight(self, step: int) -> float:
        ramping = self.method == "progressive" and step <= self.schedule.ramp
        return self.schedule.weight(step) if ramping else 0.0

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        w = self._weight(step)
        return loss + w * penalty(self.cs) if w else loss

    def after_step(self, step: int) -> None:
        if self.method == "progressive" and step <= self.schedule.ramp:
            zeroed = threshold_step(self.cs, self.shrink * self._weight(step), self.schedule.threshold)
            chosen = sum(len(c.chosen) for c in self.cs)
            if self.zero_at is None and zeroed == chosen:
                self.zero_at = step
            if step == self.schedule.ramp:
                self.forced = chosen - zeroed
        if self.method == "oneshot" or step >= self.schedule.ramp:
            zero_chosen(self.cs)  # held at zero


def cut(net: nn.Module, example: Example, cs: list[Coupled]) -> nn.Module:
    """Remove the chosen channels physically (Torch-Pruning), with everything coupled to them."""
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    for c in cs:
        if c.chosen:
            dg.get_pruning_group(c.root, c.handler, idxs=list(c.chosen)).prune()
    return net


def macs(net: nn.Module, example: Example) -> int:
    return int(tp.utils.count_ops_and_params(net, example)[0])
