"""Batch norms folded into the convolutions before them, for inference copies of trained networks."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """``net`` (in eval mode) with each ``Sequential``'s conv-then-batch-norm pair replaced by one
    convolution and an identity, in place; the outputs are the same to float rounding."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv1d | nn.Conv2d) and isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return net
