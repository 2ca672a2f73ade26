"""Structured pruning of the student: filter importance, the progressive group-sparsity penalty, its
proximal thresholding step, and the physical removal of zeroed filters.

A *filter* is one output channel of a convolution in the student's three per-GOP branches
(I-frame, motion/residual maps, per-frame series) with the parameters that make that channel's
output: the kernel row, its bias and its batch-norm scale and shift. With all of them at zero the
channel's output is exactly zero after the ReLU, so removing it changes nothing downstream; that
is what lets a network trained with zeroed filters be cut to a smaller one with the same outputs.

The removal itself is Torch-Pruning's dependency graph (``torch_pruning``), one graph per branch:
it cuts a filter with the next layer's input channels and the batch-norm entries. The branches
end in pooled features concatenated into the GOP layer (``gop[0]``, a Linear); there the maps and
series branches concatenate *one tensor twice* (mean and max pools), which the graph's concat
index mapping does not follow (it cuts the wrong columns), so those columns are computed here and
cut with Torch-Pruning's own ``prune_linear_in_channels``. The GRU and the layers after it are
not pruned (Torch-Pruning has no recurrent pruner, and the GRU is 1 % of the MACs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from models.student import StudentNet

CRITERIA = ("l1", "l2", "bn", "taylor")
# each branch's pooled output as it enters the GOP layer: (branch, pools per channel)
BRANCHES = (("iframe", 1), ("maps", 2), ("series", 2))


@dataclass(frozen=True)
class Layer:
    """A prunable convolution: its module name, its batch norm (None: the conv's bias instead)."""

    name: str
    conv: nn.Conv1d | nn.Conv2d
    bn: nn.BatchNorm2d | None
    branch: str
    last: bool  # the branch's output layer (feeds the GOP layer)

    def params(self) -> list[torch.Tensor]:
        out = [self.conv.weight]
        if self.conv.bias is not None:
            out.append(self.conv.bias)
        if self.bn is not None:
            out += [self.bn.weight, self.bn.bias]
        return out


def layers(net: StudentNet) -> list[Layer]:
    """The student's prunable convolutions, branch by branch, input to output."""
    out = []
    for branch, _ in BRANCHES:
        body = getattr(net, branch).body
        convs: list[tuple[str, nn.Module, nn.Module | None]] = []
        for i, m in enumerate(body):
            if isinstance(m, nn.Sequential):  # conv, BN, ReLU
                convs.append((f"{branch}.body.{i}.0", m[0], m[1]))
            elif isinstance(m, nn.Conv1d | nn.Conv2d):
                convs.append((f"{branch}.body.{i}", m, None))
        for k, (name, conv, bn) in enumerate(convs):
            out.append(Layer(name, conv, bn, branch, k == len(convs) - 1))  # type: ignore[arg-type]
    return out


def _rows(p: torch.Tensor) -> torch.Tensor:
    return p.reshape(p.shape[0], -1)


def group_norms(layer: Layer) -> torch.Tensor:
    """Per filter, the L2 norm of every parameter that makes its channel."""
    return torch.sqrt(sum((_rows(p.detach()) ** 2).sum(dim=1) for p in layer.params()))  # type: ignore[arg-type]


def importance(layer: Layer, criterion: str) -> np.ndarray:
    """Per filter, how much it matters (low: pruned first).

    - ``l1`` / ``l2``: the kernel's norm;
    - ``bn``: the batch-norm scale's magnitude (for a conv without batch norm, its kernel's L2);
    - ``taylor``: the first-order Taylor estimate of the loss change when the filter is removed,
      ``|sum(w * dL/dw)|`` over its parameters; needs gradients accumulated in ``.grad``."""
    w = _rows(layer.conv.weight.detach())
    if criterion == "l1":
        s = w.abs().sum(dim=1)
    elif criterion == "l2" or (criterion == "bn" and layer.bn is None):
        s = w.norm(dim=1)
    elif criterion == "bn":
        assert layer.bn is not None
        s = layer.bn.weight.detach().abs()
    elif criterion == "taylor":
        s = torch.zeros(w.shape[0])
        for p in layer.params():
            if p.grad is None:
                raise ValueError("the taylor criterion needs gradients: run a backward pass first")
            s += (_rows(p.detach()) * _rows(p.grad)).sum(dim=1)
        s = s.abs()
    else:
        raise ValueError(f"criterion {criterion!r}: one of {', '.join(CRITERIA)}")
    return s.numpy().astype(np.float64)


SCOPES = ("layer", "global")


def choose(
    net: StudentNet, criterion: str, fraction: float, round_to: int = 1, scope: str = "layer"
) -> dict[str, list[int]]:
    """The least important filters, ``fraction`` of them, at least one filter staying in each layer.

    - ``scope="layer"``: the same share of every layer's filters.
    - ``scope="global"``: one ranking over all layers, each score divided by its layer's mean (the
      criteria's scales differ between layers), so a layer whose filters matter loses fewer.

    With ``round_to`` > 1 each layer larger than it keeps a multiple of it (at least one, and never
    more than it had): the runtimes' convolutions work on blocks of 8 or 16 channels, and a layer
    cut to 43 channels costs about what 48 would."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: one of {', '.join(SCOPES)}")
    scores = {la.name: importance(la, criterion) for la in layers(net)}
    counts = {la.name: la.conv.out_channels for la in layers(net)}
    if scope == "layer":
        cut = {name: min(round(fraction * n), n - 1) for name, n in counts.items()}
    else:
        ranked = sorted((float(v / max(scores[name].mean(), 1e-12)), name)
                        for name in scores for v in scores[name])  # fmt: skip
        cut = dict.fromkeys(counts, 0)
        for _, name in ranked[: round(fraction * len(ranked))]:
            cut[name] = min(cut[name] + 1, counts[name] - 1)
    out: dict[str, list[int]] = {}
    for name, n in counts.items():
        k = cut[name]
        if round_to > 1 and n > round_to:
            keep = max(round_to, round((n - k) / round_to) * round_to)
            k = n - min(keep, n)
        if k > 0:
            out[name] = sorted(np.argsort(scores[name], kind="stable")[:k].tolist())
    return out


# --- the progressive constraint and its thresholding -------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The penalty's weight at each step: 0, growing as a square to ``peak`` at ``ramp`` steps,
    then held. ``threshold``: a chosen filter whose group norm falls under it is set to zero."""

    peak: float = 0.05
    ramp: int = 400
    threshold: float = 1e-3

    def weight(self, step: int) -> float:
        return self.peak * min(1.0, step / max(self.ramp, 1)) ** 2

    def to_dict(self) -> dict[str, float | int | str]:
        return {"peak": self.peak, "ramp_steps": self.ramp, "threshold": self.threshold,
                "form": "peak * min(1, step / ramp_steps) ** 2"}  # fmt: skip


def penalty(net: StudentNet, chosen: dict[str, list[int]]) -> torch.Tensor:
    """The group-sparsity term: the sum of the chosen filters' group norms (differentiable)."""
    by_name = {la.name: la for la in layers(net)}
    total = torch.zeros(())
    for name, idxs in chosen.items():
        la = by_name[name]
        ix = torch.as_tensor(idxs)
        sq = sum((_rows(p)[ix] ** 2).sum(dim=1) for p in la.params())
        total = total + torch.sqrt(sq + 1e-12).sum()  # type: ignore[arg-type]
    return total


@torch.no_grad()
def threshold_step(net: StudentNet, chosen: dict[str, list[int]], shrink: float, threshold: float) -> int:
    """The proximal step after an optimiser step: each chosen filter's parameters shrink towards
    zero by ``shrink`` in group norm (group soft-thresholding), and one whose norm is then under
    ``threshold`` is set to exactly zero. Returns how many chosen filters are zero."""
    by_name = {la.name: la for la in layers(net)}
    zero = 0
    for name, idxs in chosen.items():
        la = by_name[name]
        ix = torch.as_tensor(idxs)
        norms = group_norms(la)[ix]
        scale = torch.clamp(1.0 - shrink / torch.clamp(norms, min=1e-12), min=0.0)
        scale[norms * scale < threshold] = 0.0
        for p in la.params():
            view = _rows(p.data)
            view[ix] *= scale[:, None]
        zero += int((scale == 0).sum())
    return zero


@torch.no_grad()
def zero_filters(net: StudentNet, chosen: dict[str, list[int]]) -> None:
    """Set the chosen filters to exactly zero (the one-shot mask, and the final forcing)."""
    threshold_step(net, chosen, shrink=float("inf"), threshold=float("inf"))


def zeroed(net: StudentNet) -> dict[str, list[int]]:
    """Per layer, the filters whose parameters are all exactly zero."""
    out = {}
    for la in layers(net):
        idx = torch.nonzero(group_norms(la) == 0).flatten().tolist()
        if idx and len(idx) < la.conv.out_channels:
            out[la.name] = idx
    return out


# --- physical removal ------------------------------------------------------------------------


def _gop_columns(net: StudentNet, chosen: dict[str, list[int]]) -> list[int]:
    """The GOP layer's input columns fed by the chosen filters of the branches' output layers."""
    cols, at = [], 0
    last = {la.branch: la for la in layers(net) if la.last}
    for branch, pools in BRANCHES:
        la = last[branch]
        c = la.conv.out_channels
        for i in chosen.get(la.name, []):
            cols += [at + p * c + i for p in range(pools)]
        at += pools * c
    return sorted(cols)


def _branch_input(net: StudentNet, branch: str) -> torch.Tensor:
    cfg = net.cfg
    shapes = {"iframe": (1, 3, *cfg.thumb_hw), "maps": (1, cfg.map_channels, *cfg.grid_hw),
              "series": (1, cfg.series_channels, cfg.series_len)}  # fmt: skip
    return torch.zeros(shapes[branch])


def remove(net: StudentNet, chosen: dict[str, list[int]]) -> StudentNet:
    """A copy of ``net`` without the chosen filters (and everything that depends on them only)."""
    out = copy.deepcopy(net).eval()
    for m in out.modules():  # an in-place ReLU hides the conv before it from the graph's tracing
        if isinstance(m, nn.ReLU):
            m.inplace = False
    cols = _gop_columns(out, chosen)
    if cols:
        tp.prune_linear_in_channels(out.gop[0], cols)
    for branch, _ in BRANCHES:
        body = getattr(out, branch).body
        graph = tp.DependencyGraph().build_dependency(body, example_inputs=_branch_input(out, branch))
        by_name = {la.name: la for la in layers(out) if la.branch == branch}
        for name, idxs in chosen.items():
            if name in by_name and idxs:
                conv = by_name[name].conv
                fn = tp.prune_conv_out_channels
                group = graph.get_pruning_group(conv, fn, idxs=list(idxs))
                group.prune()
    return out


def fit_to(net: StudentNet, state: dict[str, torch.Tensor]) -> StudentNet:
    """Resize ``net``'s prunable layers to a pruned checkpoint's shapes, so it can be loaded."""
    by_name = dict(net.named_modules())
    for la in layers(net):
        w = state.get(f"{la.name}.weight")
        if w is None or w.shape == la.conv.weight.shape:
            continue
        conv = la.conv
        new = type(conv)(w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                         bias=conv.bias is not None)  # fmt: skip
        _replace(net, la.name, new)
        if la.bn is not None:
            bn_name = la.name[: -len(".0")] + ".1"
            _replace(net, bn_name, nn.BatchNorm2d(w.shape[0]))
    gop = by_name["gop.0"]
    w = state.get("gop.0.weight")
    if w is not None and isinstance(gop, nn.Linear) and w.shape != gop.weight.shape:
        _replace(net, "gop.0", nn.Linear(w.shape[1], w.shape[0]))
    return net


def _replace(net: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent), attr, new)


# --- what a network costs -------------------------------------------------------------------


def macs_per_gop(net: StudentNet) -> int:
    """Multiply-accumulates the live path spends per GOP: the GOP's code (branches and GOP layer)
    and one window's GRU over ``window`` codes and the head."""
    count = [0]

    def conv(m: nn.Module, _: Sequence[torch.Tensor], y: Any) -> None:
        assert isinstance(m, nn.Conv1d | nn.Conv2d)
        per_out = int(np.prod(m.kernel_size)) * m.in_channels // m.groups
        count[0] += int(y.numel()) * per_out

    def linear(m: nn.Module, _: Sequence[torch.Tensor], y: Any) -> None:
        assert isinstance(m, nn.Linear)
        count[0] += int(y.numel()) * m.in_features

    def gru(m: nn.Module, x: Sequence[torch.Tensor], _: Any) -> None:
        assert isinstance(m, nn.GRU)
        steps = int(x[0].shape[0] * x[0].shape[1])
        count[0] += steps * 3 * m.hidden_size * (m.input_size + m.hidden_size)

    hooks: list[Callable[..., None]] = []
    kinds: dict[type, Callable[..., None]] = {nn.Conv1d: conv, nn.Conv2d: conv, nn.Linear: linear}
    kinds[nn.GRU] = gru
    for m in net.modules():
        fn = kinds.get(type(m))
        if fn is not None:
            hooks.append(m.register_forward_hook(fn).remove)
    cfg = net.cfg
    with torch.inference_mode():
        code = net.encode_gops(_branch_input(net, "iframe"), _branch_input(net, "maps"),
                               _branch_input(net, "series"), torch.zeros(1, cfg.stats_dim))  # fmt: skip
        net.forward_head(net.fuse(code.expand(cfg.window, -1)[None]))
    for h in hooks:
        h()
    return count[0]
