"""The still classifiers made cheaper for screening, with the same outputs to float rounding.

- Every batch norm is folded into the convolution before it, and weights and inputs are
  channels-last (oneDNN then convolves without reordering). Both networks get this, so the
  benchmark compares like with like.
- In the compressed-domain network the chroma path is linear from the coefficients up to the
  body's first convolution (deconvolution, depth to space, concatenation, then a 2x2 convolution
  with stride 2). The two compose into one convolution on the chroma grid itself: for 4:2:0 a
  1x1, for 4:2:2 a 2x1 with stride (2, 1), for 4:4:4 a 2x2 with stride 2, one for Cb and one for
  Cr, whose outputs are added to the luma side's. So screening never builds the upsampled chroma
  maps or the fused map at the luma grid's size (the deconvolution is still what the network
  learns and what training runs).
- The graph ONNX Runtime runs has no concatenation, no crop and no layout change of its own: the
  chroma maps come cropped to the rows and columns the first convolution reads (a view of the
  reader's memory, :meth:`FoldedSnapshotNet.chroma_grid`), the two chroma convolutions' outputs
  are sums it fuses into them, and the pools are global ones it runs in its blocked layout.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.errors import ModelError
from models.folding import fold_batch_norms as _fold_batch_norms
from models.snapshot.net import UPSAMPLE, RgbNet, SnapshotConfig, SnapshotNet

if TYPE_CHECKING:
    from models.snapshot.onnx_net import OnnxStillNet

RUNTIMES = ("onnxruntime", "torch")


def for_inference(
    net: SnapshotNet | RgbNet, runtime: str = "onnxruntime"
) -> FoldedSnapshotNet | RgbNet | OnnxStillNet:
    """The screening copy of a trained network (see the module's docstring), run by ONNX Runtime
    (:class:`models.snapshot.onnx_net.OnnxStillNet`) or, with ``runtime="torch"``, by PyTorch."""
    if runtime not in RUNTIMES:
        raise ModelError(f"still classifier runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    if isinstance(net, SnapshotNet):
        folded: FoldedSnapshotNet | RgbNet = FoldedSnapshotNet(net)
    else:
        folded = _fold_batch_norms(copy.deepcopy(net).eval()).to(memory_format=torch.channels_last)  # type: ignore[assignment]
    if runtime == "torch":
        return folded
    from models.snapshot.onnx_net import OnnxStillNet

    return OnnxStillNet(folded)


def channels_last(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.contiguous(memory_format=torch.channels_last)


class FoldedSnapshotNet(nn.Module):
    """A trained :class:`SnapshotNet` with its chroma path composed into the body's first
    convolution (per subsampling) and its batch norms folded."""

    def __init__(self, net: SnapshotNet) -> None:
        super().__init__()
        net = _fold_batch_norms(copy.deepcopy(net).eval())  # type: ignore[assignment]
        self.cfg: SnapshotConfig = net.cfg
        w = net.cfg.width
        self.luma = net.luma
        block = net.body[0]
        assert isinstance(block, nn.Sequential)
        first = block[0]
        assert isinstance(first, nn.Conv2d) and first.kernel_size == (2, 2) and first.stride == (2, 2)
        assert first.bias is not None  # folded: the convolution carries the batch norm's shift
        weight, bias = first.weight.detach(), first.bias.detach()
        self.first_luma = nn.Conv2d(w, weight.shape[0], 2, 2)
        with torch.no_grad():
            self.first_luma.weight.copy_(weight[:, :w])
            self.first_luma.bias.copy_(bias)  # type: ignore[union-attr]
        self.chroma = nn.ModuleDict()
        for sub, (sh, sw) in UPSAMPLE.items():
            deconv = net.chroma[sub.replace(":", "")]
            assert isinstance(deconv, nn.ConvTranspose2d)
            self.chroma[sub.replace(":", "")] = _compose(deconv, weight[:, w : w + w // 2],
                                                         weight[:, w + w // 2 :], sh, sw)  # fmt: skip
        self.kernels = {sub: (2 // sh, 2 // sw) for sub, (sh, sw) in UPSAMPLE.items()}
        self.rest = nn.Sequential(*list(block)[1:], *list(net.body)[1:])
        self.scene, self.cue = net.scene, net.cue
        self.to(memory_format=torch.channels_last)
        self.eval()

    def chroma_grid(self, rows: int, cols: int, sub: str) -> tuple[int, int]:
        """The chroma rows and columns the first convolution reads, for a luma grid of ``rows`` x
        ``cols`` blocks: those of its output positions (the rest of a chroma map, at most one
        row or column at the bottom or right edge, changes nothing)."""
        kh, kw = self.kernels[sub]
        return rows // 2 * kh, cols // 2 * kw

    def forward(
        self, y: torch.Tensor, cb: torch.Tensor | None, cr: torch.Tensor | None, sub: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if cb is not None and cr is not None:
            rows, cols = self.chroma_grid(y.shape[2], y.shape[3], sub)
            cb, cr = cb[:, :, :rows, :cols], cr[:, :, :rows, :cols]
        return self.cropped(y, cb, cr, sub)

    def cropped(
        self, y: torch.Tensor, cb: torch.Tensor | None, cr: torch.Tensor | None, sub: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on chroma maps already cropped to :meth:`chroma_grid`."""
        z = self.first_luma(self.luma(y))
        if cb is not None and cr is not None:
            to_cb, to_cr = self.chroma[sub.replace(":", "")].children()
            z = z + to_cb(cb)
            z = z + to_cr(cr)
        z = self.rest(z)
        mean = nn.functional.adaptive_avg_pool2d(z, 1).flatten(1)
        peak = nn.functional.adaptive_max_pool2d(z, 1).flatten(1)
        pooled = torch.cat([mean, peak], dim=1)
        return self.scene(pooled), self.cue(pooled)


def _compose(
    deconv: nn.ConvTranspose2d, w_cb: torch.Tensor, w_cr: torch.Tensor, sh: int, sw: int
) -> nn.ModuleList:
    """Two convolutions on the chroma grid, on Cb and on Cr, whose sum equals: ``deconv`` (kernel
    = stride = (sh, sw)) on Cb and on Cr, then a 2x2 stride-2 convolution whose Cb and Cr input
    slices are ``w_cb`` and ``w_cr`` (no bias: the first convolution's own bias is on the luma
    side; the deconvolution's bias goes to the Cb one). Output position
    (i, j) covers luma rows 2i..2i+1, which are chroma rows (2i + dy) // sh at kernel phase
    (2i + dy) % sh, so the kernel is (2 // sh, 2 // sw) with that stride."""
    assert deconv.bias is not None
    d, db = deconv.weight.detach(), deconv.bias.detach()  # (K, C, sh, sw), (C,)
    kh, kw = 2 // sh, 2 // sw
    out_ch, k = w_cb.shape[0], d.shape[0]
    weight = torch.zeros(out_ch, 2 * k, kh, kw)
    bias = torch.zeros(out_ch)
    for plane, wp in enumerate((w_cb, w_cr)):
        for dy in range(2):
            for dx in range(2):
                a, b = (0, dy) if sh == 2 else (dy, 0)  # (kernel row, deconv phase row)
                c_, e = (0, dx) if sw == 2 else (dx, 0)
                weight[:, plane * k : (plane + 1) * k, a, c_] += wp[:, :, dy, dx] @ d[:, :, b, e].T
                bias += wp[:, :, dy, dx] @ db
    to_cb = nn.Conv2d(k, out_ch, (kh, kw), (kh, kw))
    to_cr = nn.Conv2d(k, out_ch, (kh, kw), (kh, kw), bias=False)
    with torch.no_grad():
        to_cb.weight.copy_(weight[:, :k])
        to_cr.weight.copy_(weight[:, k:])
        to_cb.bias.copy_(bias)  # type: ignore[union-attr]
    return nn.ModuleList([to_cb, to_cr])
