"""The compressed-domain student: I-frame, motion-vector, residual and per-frame-series branches,
fused over the stream's sliding window of GOPs into (a) per-category risk logits and (b) an
embedding for the knowledge base. torchvision's shape: config -> blocks -> network -> builder.

Inputs are tensors described by :class:`StudentConfig` (``streaming.tensors`` makes them from
GOP features), batched as (N, W, ...) for N windows of W GOPs:

- ``thumb``  (N, W, 3, 90, 160) float, the I-frame thumbnail scaled to [0, 1]
- ``maps``   (N, W, 6, 24, 40) float, motion/residual maps on a fixed grid
- ``series`` (N, W, 4, 48) float, per-frame signals resampled to 48 steps
- ``stats``  (N, W, 4) float, GOP statistics
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from schemas.events import Category

CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)


@dataclass(frozen=True)
class StudentConfig:
    categories: tuple[str, ...] = CATEGORIES
    thumb_hw: tuple[int, int] = (90, 160)
    grid_hw: tuple[int, int] = (24, 40)
    map_channels: int = 6
    series_channels: int = 4
    series_len: int = 48
    stats_dim: int = 4
    window: int = 4
    width: int = 32
    embed_dim: int = 128
    dropout: float = 0.1
    residual_scale: int = 16  # the extraction's residual resolution (1/16: one sample per macroblock)
    residual_frames: str = "all"  # which frames have residuals (streaming.extract.ExtractConfig)
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class IFrameBranch(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, w // 2, 2), _conv(w // 2, w, 2), _conv(w, 2 * w, 2), _conv(2 * w, 3 * w, 2)
        )
        self.out_dim = 3 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).amax(dim=(2, 3))  # max: small objects (a QR code, a caption) count


class MapBranch(nn.Module):
    def __init__(self, cin: int, w: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(cin, w, 1), _conv(w, 2 * w, 2), _conv(2 * w, 3 * w, 2))
        self.out_dim = 6 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], dim=1)


class SeriesBranch(nn.Module):
    """Per-frame signals (residual energy, motion, frame size): flashes are periodic in them."""

    def __init__(self, cin: int, w: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(cin, w, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv1d(w, 2 * w, 5, stride=2, padding=2), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.out_dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return torch.cat([y.mean(dim=2), y.amax(dim=2)], dim=1)


class StudentNet(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.iframe = IFrameBranch(w)
        self.maps = MapBranch(cfg.map_channels, w)
        self.series = SeriesBranch(cfg.series_channels, w)
        fused = self.iframe.out_dim + self.maps.out_dim + self.series.out_dim + cfg.stats_dim
        self.gop = nn.Sequential(
            nn.Linear(fused, cfg.embed_dim), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)
        )
        self.temporal = nn.GRU(cfg.embed_dim, cfg.embed_dim, batch_first=True)
        self.head = nn.Linear(cfg.embed_dim, len(cfg.categories))

    def encode_gops(
        self, thumb: torch.Tensor, maps: torch.Tensor, series: torch.Tensor, stats: torch.Tensor
    ) -> torch.Tensor:
        """GOP tensors without a window axis, (M, ...) -> (M, embed_dim) GOP codes. A GOP's code
        does not depend on its window, so a stream computes it once, not once per window."""
        per_gop = torch.cat([self.iframe(thumb), self.maps(maps), self.series(series), stats], dim=1)
        return self.gop(per_gop)

    def fuse(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, W, embed_dim) GOP codes -> (N, embed_dim) embedding of each window's last GOP."""
        out, _ = self.temporal(codes)
        return out[:, -1] + codes[:, -1]  # the last step, with a skip so the current GOP stays visible

    def forward_features(
        self, thumb: torch.Tensor, maps: torch.Tensor, series: torch.Tensor, stats: torch.Tensor
    ) -> torch.Tensor:
        """Window tensors -> (N, embed_dim) embedding of the window's last GOP in its context."""
        n, w = thumb.shape[:2]
        codes = self.encode_gops(
            thumb.flatten(0, 1), maps.flatten(0, 1), series.flatten(0, 1), stats.flatten(0, 1)
        )
        return self.fuse(codes.view(n, w, -1))

    def forward_head(self, emb: torch.Tensor) -> torch.Tensor:
        return self.head(emb)

    def forward(
        self, thumb: torch.Tensor, maps: torch.Tensor, series: torch.Tensor, stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.forward_features(thumb, maps, series, stats)
        return self.forward_head(emb), emb


def student(cfg: StudentConfig | None = None) -> StudentNet:
    return StudentNet(cfg or StudentConfig())


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
