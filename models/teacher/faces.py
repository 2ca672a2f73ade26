"""MTCNN face detection (Zhang et al. 2016), written here, with the weights that ship in the
``facenet-pytorch`` wheel (installed ``--no-deps``: its own code needs torchvision, we only read
its ``data/{p,r,o}net.pt``).

Three small networks in a cascade: P-Net proposes windows over an image pyramid, R-Net and O-Net
re-score and refine them at 24 and 48 pixels. Layer names follow the checkpoint, and the two
dense nets flatten in the checkpoint's (width, height, channel) order, as the original Caffe models
did. Detection thresholds, the pyramid factor and the non-maximum suppression follow the reference
implementation's defaults (0.6 / 0.7 / 0.7, 0.709, union then minimum overlap at the last stage).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ModelError


def weights_dir() -> Path:
    spec = find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).reshape(len(x), -1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).reshape(len(x), -1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), F.softmax(self.dense6_1(x), dim=1)


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns the kept indices, best first."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= thr]
    return np.asarray(keep, np.intp)


def _square(b: np.ndarray) -> np.ndarray:
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    out = b.copy()
    out[:, 0] = b[:, 0] + w / 2 - side / 2
    out[:, 1] = b[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    out = b.copy()
    out[:, 0:4] = b[:, 0:4] + reg * np.stack([w, h, w, h], 1)
    return out


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


class MTCNN:
    """``detect(rgb) -> (N, 5)`` boxes ``x1, y1, x2, y2, probability`` in pixels."""

    def __init__(self, min_face: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, folder: Path | None = None) -> None:  # fmt: skip
        folder = folder or weights_dir()
        self.nets = []
        for cls, name in ((PNet, "pnet"), (RNet, "rnet"), (ONet, "onet")):
            net = cls()
            net.load_state_dict(torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True))
            self.nets.append(net.eval())
        self.min_face, self.thr, self.factor = min_face, thresholds, factor

    def _crops(self, img: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
        """Each box cut out of the image (zeros outside it), resized to ``size`` x ``size``."""
        _, h, w = img.shape
        out = []
        for x1, y1, x2, y2 in np.rint(boxes[:, :4]).astype(int):
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
            if cx2 < cx1 or cy2 < cy1:
                crop = torch.zeros(3, max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1))
            else:
                patch = img[:, cy1 : cy2 + 1, cx1 : cx2 + 1]
                crop = F.pad(patch, (cx1 - x1, x2 - cx2, cy1 - y1, y2 - cy2))
            out.append(F.interpolate(crop[None], size=(size, size), mode="area"))
        return _norm(torch.cat(out))

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> np.ndarray:
        pnet, rnet, onet = self.nets
        img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
        _, h, w = img.shape
        m = 12.0 / self.min_face
        scale, minl = m, min(h, w) * m
        found = []
        while minl >= 12:
            hs, ws = int(h * scale + 1), int(w * scale + 1)
            x = _norm(F.interpolate(img[None], size=(hs, ws), mode="area"))
            reg, prob = pnet(x)
            p = prob[0, 1].numpy()
            ys, xs = np.nonzero(p >= self.thr[0])
            if len(ys):
                r = reg[0].numpy()[:, ys, xs].T
                cells = np.stack([xs, ys], 1).astype(np.float32)
                q1, q2 = np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)
                b = np.hstack([q1, q2, p[ys, xs][:, None], r])
                found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
            scale *= self.factor
            minl *= self.factor
        if not found:
            return np.zeros((0, 5), np.float32)
        b = np.vstack(found)
        b = b[nms(b[:, :4], b[:, 4], 0.7)]
        boxes = _square(np.hstack([_regress(b[:, :4], b[:, 5:9]), b[:, 4:5]]))
        for stage, (net, size) in enumerate(((rnet, 24), (onet, 48)), start=1):
            if not len(boxes):
                break
            reg, prob = net(self._crops(img, boxes, size))
            score = prob[:, 1].numpy()
            ok = score > self.thr[stage]
            boxes, regs = np.hstack([boxes[ok, :4], score[ok, None]]), reg.numpy()[ok]
            if stage == 1:  # R-Net: suppress, refine, square up for O-Net
                keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
                boxes = _square(np.hstack([_regress(boxes[keep, :4], regs[keep]), boxes[keep, 4:5]]))
            else:  # O-Net: refine, then suppress by the smaller box's overlap
                boxes = np.hstack([_regress(boxes[:, :4], regs), boxes[:, 4:5]])
                boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, "min")]
        return boxes.astype(np.float32)
