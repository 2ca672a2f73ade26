"""Render a :class:`~streaming.synth.scenario.Scenario` frame by frame (RGB uint8, deterministic).

Every random choice comes from a generator seeded by ``(scenario.seed, what, index)``, so frame
``i`` of a scenario is the same on every machine and in every run, in any order of rendering.
"""

from __future__ import annotations

import math
from functools import cached_property

import cv2
import numpy as np
import segno

from streaming.synth import assets
from streaming.synth.scenario import (
    CLIPS,
    PHOTOS,
    FadeOverlay,
    FlashOverlay,
    Overlay,
    QrOverlay,
    RebroadcastOverlay,
    Scenario,
    Scene,
    TextOverlay,
)


def linear_to_srgb8(v: float) -> int:
    v = min(max(v, 0.0), 1.0)
    c = v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
    return round(c * 255)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([abs(k) for k in key])


class _SceneRenderer:
    def __init__(self, scene: Scene, index: int, seed: int, w: int, h: int) -> None:
        self.scene, self.i, self.seed, self.w, self.h = scene, index, seed, w, h
        rng = _rng(seed, 1, index)
        self.source = scene.source or (
            str(rng.choice(CLIPS)) if scene.kind == "clip" else str(rng.choice(PHOTOS))
        )
        self.phase = float(rng.uniform(0, 2 * math.pi))
        n = scene.sprites if scene.kind in ("photo", "clip", "talking_head") else 0
        if scene.kind == "game":
            n = 6
        self.sprites = [
            (
                rng.uniform(0, 1, 2),
                rng.uniform(-0.5, 0.5, 2) * (4 if scene.kind == "game" else 1),
                tuple(int(c) for c in rng.integers(40, 220, 3)),
            )
            for _ in range(n)
        ]

    @cached_property
    def base(self) -> np.ndarray:
        w, h = self.w, self.h
        if self.scene.kind in ("photo", "talking_head"):
            return assets.cover(assets.photo(self.source), round(w * 1.3), round(h * 1.3))
        if self.scene.kind == "screen":
            page = assets.cover(assets.photo("page"), w, h)
            return np.concatenate([page, page[::-1]], axis=0)
        if self.scene.kind == "game":
            rng = _rng(self.seed, 2, self.i)
            # colourful but luminance-limited tiles: fast scrolling must stay a benign hard negative
            # (cells within a 10% relative-luminance band cannot make WCAG flashes by moving)
            cells = rng.integers(108, 133, (h * 2 // 40 + 1, w * 2 // 40 + 1, 3), dtype=np.uint8)
            return cv2.resize(cells, (w * 2, h * 2), interpolation=cv2.INTER_NEAREST)
        return np.zeros((h, w, 3), np.uint8)

    def frame(self, t: float) -> np.ndarray:
        s, w, h = self.scene, self.w, self.h
        tl = (t - s.start_s) * s.speed
        if s.kind == "clip":
            frames, fps = assets.clip(self.source)
            img = assets.cover(frames[int(tl * fps) % len(frames)], w, h)
        elif s.kind == "montage":
            k = int(tl / s.cut_period_s)
            name = PHOTOS[(k * 3 + self.i) % len(PHOTOS)]
            img = assets.cover(assets.photo(name), w, h)
        elif s.kind == "game":
            ox = int(tl * 420) % w
            oy = int(tl * 150) % h
            img = np.ascontiguousarray(self.base[oy : oy + h, ox : ox + w])
        elif s.kind == "screen":
            oy = int(tl * 30) % h
            img = np.ascontiguousarray(self.base[oy : oy + h])
        else:
            img = self._camera(tl)
        return self._draw_sprites(img, tl)

    def _camera(self, tl: float) -> np.ndarray:
        base, w, h = self.base, self.w, self.h
        bh, bw = base.shape[:2]
        zoom, cx, cy = 1.0, 0.5, 0.5
        motion = "shake" if self.scene.kind == "talking_head" else self.scene.motion
        if motion == "pan":
            cx = 0.5 + 0.11 * math.sin(0.35 * tl + self.phase)
            cy = 0.5 + 0.05 * math.sin(0.21 * tl + self.phase)
        elif motion == "zoom":
            zoom = 1.0 + 0.2 * (0.5 + 0.5 * math.sin(0.5 * tl + self.phase))
        elif motion == "shake":
            jitter = _rng(self.seed, 3, self.i, round(tl * 1000)).normal(0, 0.006, 2)
            cx, cy = 0.5 + jitter[0], 0.5 + jitter[1] + 0.01 * math.sin(2 * tl)
        cw, ch = w / zoom, h / zoom
        x0 = int(np.clip(cx * bw - cw / 2, 0, bw - cw))
        y0 = int(np.clip(cy * bh - ch / 2, 0, bh - ch))
        crop = base[y0 : y0 + int(ch), x0 : x0 + int(cw)]
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)

    def _draw_sprites(self, img: np.ndarray, tl: float) -> np.ndarray:
        if not self.sprites:
            return img
        img = img.copy()
        r = max(4, self.h // 14)
        for pos, vel, color in self.sprites:
            p = (pos + vel * tl) % 2.0
            p = np.where(p > 1.0, 2.0 - p, p)  # bounce
            c = (int(r + p[0] * (self.w - 2 * r)), int(r + p[1] * (self.h - 2 * r)))
            cv2.circle(img, c, r, color, thickness=-1, lineType=cv2.LINE_AA)
        return img


def _flash(img: np.ndarray, o: FlashOverlay, t: float) -> np.ndarray:
    h, w = img.shape[:2]
    on = int(2 * o.hz * (t - o.start_s)) % 2 == 0
    dark, bright = o.levels()
    level = bright if on else dark
    if o.color == "white":
        v = linear_to_srgb8(level)
        color = np.array([v, v, v], np.uint8)
    else:
        # saturated red whose linear value swings like the luminance levels
        color = np.array([linear_to_srgb8(min(1.0, level * 1.05)), 0, 0], np.uint8)
    side = math.sqrt(o.area)
    rw, rh = max(2, round(w * side)), max(2, round(h * side))
    x0, y0 = (w - rw) // 2, (h - rh) // 2
    img[y0 : y0 + rh, x0 : x0 + rw] = color
    return img


class _QrStamp:
    def __init__(self, o: QrOverlay, w: int, h: int, seed: int) -> None:
        m = np.array(segno.make(o.payload, error="m").matrix, dtype=bool)
        m = np.pad(m, 4, constant_values=False)  # quiet zone
        side = max(m.shape[0] * 2, round(o.size * h))
        tile = np.where(m, 0, 255).astype(np.uint8)
        tile = cv2.resize(tile, (side, side), interpolation=cv2.INTER_NEAREST)
        rgb = np.repeat(tile[..., None], 3, axis=2)
        if o.style == "scanned":
            rng = _rng(seed, 5, side)
            k = side * 0.08
            src = np.array([[0, 0], [side, 0], [side, side], [0, side]], dtype=np.float32)
            dst = (src + rng.uniform(-k, k, src.shape)).astype(np.float32)
            warp = cv2.getPerspectiveTransform(src, dst)
            rgb = cv2.warpPerspective(rgb, warp, (side, side), borderValue=(235, 235, 235))
            rgb = cv2.GaussianBlur(rgb, (3, 3), 0.8)
            noise = rng.normal(0, 8, rgb.shape)
            rgb = np.clip(rgb.astype(np.float32) * 0.85 + 20 + noise, 0, 255).astype(np.uint8)
        self.rgb = rgb
        self.x = int(np.clip(o.x * w - side / 2, 0, w - side))
        self.y = int(np.clip(o.y * h - side / 2, 0, h - side))

    def draw(self, img: np.ndarray) -> np.ndarray:
        s = self.rgb.shape[0]
        img[self.y : self.y + s, self.x : self.x + s] = self.rgb
        return img


def _text(img: np.ndarray, o: TextOverlay) -> np.ndarray:
    h, w = img.shape[:2]
    font = cv2.FONT_HERSHEY_DUPLEX
    scale = o.size * h / 22.0
    thick = max(1, round(scale * 1.6))
    (tw, th), base = cv2.getTextSize(o.text, font, scale, thick)
    if tw > w * 0.96:  # fit the width
        scale *= w * 0.96 / tw
        thick = max(1, round(scale * 1.6))
        (tw, th), base = cv2.getTextSize(o.text, font, scale, thick)
    x = int(np.clip(o.x * w - tw / 2, 2, w - tw - 2))
    y = int(np.clip(o.y * h + th / 2, th + 2, h - base - 2))
    if o.box:
        pad = max(4, th // 3)
        roi = img[max(0, y - th - pad) : y + base + pad, max(0, x - pad) : x + tw + pad]
        roi[:] = (roi * 0.25).astype(np.uint8)
    cv2.putText(img, o.text, (x, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


def _rebroadcast(img: np.ndarray, o: RebroadcastOverlay, t: float) -> np.ndarray:
    h, w = img.shape[:2]
    frames, fps = assets.clip(o.clip)
    src = frames[int((t - o.start_s) * fps) % len(frames)]
    sh, sw = src.shape[:2]
    if o.mode == "scaled":
        return assets.cover(src, w, h)
    if o.mode == "cropped":
        cy, cx = int(sh * 0.15), int(sw * 0.15)
        return assets.cover(src[cy : sh - cy, cx : sw - cx], w, h)
    if o.mode == "letterbox":
        s = min(w / sw, h / sh) * 0.9
        nw, nh = int(sw * s) // 2 * 2, int(sh * s) // 2 * 2
        out = np.zeros_like(img)
        y0, x0 = (h - nh) // 2, (w - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
        return out
    nw = int(w * 0.4) // 2 * 2
    nh = int(nw * sh / sw) // 2 * 2
    x0, y0 = w - nw - w // 40, h // 20
    img[y0 - 3 : y0 + nh + 3, x0 - 3 : x0 + nw + 3] = 255
    img[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
    return img


def _fade(img: np.ndarray, o: FadeOverlay, t: float) -> np.ndarray:
    half = (o.end_s - o.start_s) / 2
    a = 1.0 - abs((t - o.start_s) - half) / half  # 0 -> 1 -> 0
    target = 0.0 if o.to == "black" else 255.0
    return (img.astype(np.float32) * (1 - a) + target * a).astype(np.uint8)


class Renderer:
    """Frame ``i`` of a scenario as an (H, W, 3) uint8 RGB array."""

    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario
        e = scenario.encoding
        self.w, self.h, self.fps = e.width, e.height, e.fps
        self.scenes = [
            _SceneRenderer(s, i, scenario.seed, self.w, self.h) for i, s in enumerate(scenario.scenes)
        ]
        self._qr: dict[int, _QrStamp] = {}

    @property
    def n_frames(self) -> int:
        return round(self.sc.duration_s * self.fps)

    def frame(self, i: int) -> np.ndarray:
        t = i / self.fps
        k = self.sc.scene_at(t)
        img = self.scenes[k].frame(t)
        scene = self.sc.scenes[k]
        if k > 0 and scene.transition == "fade" and t < scene.start_s + scene.fade_s:
            a = (t - scene.start_s) / scene.fade_s
            prev = self.scenes[k - 1].frame(t)
            img = (prev.astype(np.float32) * (1 - a) + img.astype(np.float32) * a).astype(np.uint8)
        img = np.ascontiguousarray(img)
        for j, o in enumerate(self.sc.overlays):
            if o.start_s <= t < o.end_s:
                img = self._overlay(img, j, o, t)
        return img

    def _overlay(self, img: np.ndarray, j: int, o: Overlay, t: float) -> np.ndarray:
        if isinstance(o, FlashOverlay):
            return _flash(img, o, t)
        if isinstance(o, QrOverlay):
            if j not in self._qr:
                self._qr[j] = _QrStamp(o, self.w, self.h, self.sc.seed + j)
            return self._qr[j].draw(img)
        if isinstance(o, TextOverlay):
            return _text(img, o)
        if isinstance(o, RebroadcastOverlay):
            return _rebroadcast(img, o, t)
        return _fade(img, o, t)

    def audio(self, i: int, sample_rate: int = 48000) -> np.ndarray:
        """Mono float32 audio for frame ``i``: a scene tone with a syllable-like envelope."""
        n = sample_rate // self.fps
        t0 = i / self.fps
        ts = t0 + np.arange(n, dtype=np.float64) / sample_rate
        k = self.sc.scene_at(t0)
        f = 180.0 + 40.0 * (k % 5)
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * ts)
        return (0.2 * env * np.sin(2 * np.pi * f * ts)).astype(np.float32)
