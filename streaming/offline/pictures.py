"""Pictures people look at: the motion field of one GOP over its I-frame."""

from __future__ import annotations

import cv2
import numpy as np

from streaming.extract import GopFeatures


def motion_picture(g: GopFeatures, width: int = 640) -> np.ndarray:
    """RGB picture: the GOP's first frame with its mean list0 motion drawn as arrows per macroblock."""
    th, tw = g.thumbnail.shape[:2]
    height = round(width * th / tw)
    img = cv2.resize(g.thumbnail, (width, height), interpolation=cv2.INTER_LINEAR)
    img = (img * 0.6).astype(np.uint8)
    moving = g.mv[1:] if len(g.mv) > 1 else g.mv
    mean = moving[:, 0].astype(np.float32).mean(axis=0)  # (2, Hm, Wm)
    hm, wm = mean.shape[1:]
    sx, sy = width / wm, height / hm
    gain = sx / 16 * 4  # arrows four times the per-frame displacement, on the picture's scale
    mag = np.hypot(mean[0], mean[1])
    for y in range(0, hm, 2):
        for x in range(0, wm, 2):
            if mag[y, x] < 0.25:
                continue
            p0 = (int((x + 0.5) * sx), int((y + 0.5) * sy))
            p1 = (int(p0[0] - mean[0, y, x] * gain), int(p0[1] - mean[1, y, x] * gain))
            cv2.arrowedLine(img, p0, p1, (255, 220, 0), 1, cv2.LINE_AA, tipLength=0.3)
    res = g.residual.astype(np.float32).mean(axis=0)
    heat = cv2.resize(np.clip(res * 8, 0, 255).astype(np.uint8), (width // 4, height // 4))
    img[: height // 4, width - width // 4 :] = cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO)[..., ::-1]
    return img
