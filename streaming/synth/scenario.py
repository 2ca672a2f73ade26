"""The scenario file format: a stream's scenes, overlays and encoding, as YAML or JSON.

A scenario is the whole script of a synthetic live stream. Scenes fill the timeline (one at a time,
entered by a cut or a fade); overlays sit on top for a time range. The ground truth follows from the
overlays: each overlay either *is* a risk (``risk_category`` is set) or is a benign hard negative
(``negative_kind`` is set); scenes can be hard negatives too (fast game motion, rapid cuts).

Example (YAML)::

    name: demo-1
    seed: 7
    duration_s: 20
    scenes:
      - {start_s: 0, kind: photo, source: astronaut, motion: pan}
      - {start_s: 10, kind: game, transition: fade}
    overlays:
      - {kind: flash, start_s: 3, end_s: 6, hz: 6, area: 0.6}
      - {kind: text, start_s: 12, end_s: 16, text: "FREE CRYPTO GIVEAWAY"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.lexicon import DEFAULT_LEXICON
from models.teacher.flash import DARK_LIMIT, LUMINANCE_DELTA, MAX_FLASHES_PER_S, WCAG_AREA_FRACTION
from schemas.events import Category
from streaming.errors import ScenarioError

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "coins")
CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Scene(_Model):
    start_s: Annotated[float, Field(ge=0)]
    kind: Literal["photo", "clip", "talking_head", "game", "screen", "montage"]
    source: str | None = Field(default=None, description="photo or clip name; default chosen by seed")
    motion: Literal["static", "pan", "zoom", "shake"] = "pan"
    transition: Literal["cut", "fade"] = "cut"
    fade_s: Annotated[float, Field(gt=0, le=5)] = 1.0
    sprites: Annotated[int, Field(ge=0, le=8)] = 1
    cut_period_s: Annotated[float, Field(gt=0.05, le=5)] = 0.4  # montage only
    speed: Annotated[float, Field(gt=0, le=10)] = 1.0

    @property
    def negative_kind(self) -> str | None:
        if self.kind == "game":
            return "fast_motion"
        if self.kind == "montage":
            return "rapid_cuts"
        return None


class _Overlay(_Model):
    start_s: Annotated[float, Field(ge=0)]
    end_s: Annotated[float, Field(gt=0)]

    @model_validator(mode="after")
    def _ordered(self) -> _Overlay:
        if self.end_s <= self.start_s:
            raise ValueError(f"overlay ends ({self.end_s}) before it starts ({self.start_s})")
        return self

    @property
    def risk_category(self) -> Category | None:
        return None

    @property
    def negative_kind(self) -> str | None:
        return None if self.risk_category else "benign_overlay"


class FlashOverlay(_Overlay):
    kind: Literal["flash"] = "flash"
    color: Literal["white", "red"] = "white"
    hz: Annotated[float, Field(gt=0, le=30, description="flashes (dark-bright-dark cycles) per second")]
    area: Annotated[float, Field(gt=0, le=1, description="fraction of the frame that flashes")] = 0.6
    contrast: Annotated[float, Field(gt=0, le=1, description="1 = full dark/bright swing")] = 1.0

    def levels(self) -> tuple[float, float]:
        """Dark and bright relative luminance (linear) of the two flash states."""
        dark = 0.01
        return dark, min(0.95, dark + 0.9 * self.contrast)

    @property
    def risk_category(self) -> Category | None:
        dark, bright = self.levels()
        strong = bright - dark >= LUMINANCE_DELTA * 1.5 and dark < DARK_LIMIT
        above = self.hz > MAX_FLASHES_PER_S + 0.5 and self.area > WCAG_AREA_FRACTION * 1.5
        return Category.PHOTOSENSITIVE_FLASH if strong and above else None

    @property
    def negative_kind(self) -> str | None:
        return None if self.risk_category else "subthreshold_strobe"


class QrOverlay(_Overlay):
    kind: Literal["qr"] = "qr"
    payload: str = "https://pay.example/offplatform"
    size: Annotated[float, Field(gt=0.05, le=0.9, description="side as a fraction of frame height")] = 0.35
    x: Annotated[float, Field(ge=0, le=1)] = 0.75
    y: Annotated[float, Field(ge=0, le=1)] = 0.5
    style: Literal["clean", "scanned"] = "clean"

    @property
    def risk_category(self) -> Category | None:
        return Category.QR_CODE


class TextOverlay(_Overlay):
    kind: Literal["text"] = "text"
    text: Annotated[str, Field(min_length=1, max_length=80)]
    size: Annotated[float, Field(gt=0.02, le=0.3, description="glyph height as a fraction of frame")] = 0.08
    x: Annotated[float, Field(ge=0, le=1)] = 0.5
    y: Annotated[float, Field(ge=0, le=1)] = 0.85
    box: bool = True

    @property
    def risk_category(self) -> Category | None:
        return Category.TEXT_LEXICON if DEFAULT_LEXICON.matches(self.text) else None

    @property
    def negative_kind(self) -> str | None:
        return None if self.risk_category else "benign_text"


class RebroadcastOverlay(_Overlay):
    kind: Literal["rebroadcast"] = "rebroadcast"
    clip: Literal["bikes", "bigbuckbunny", "carphone_pristine"] = "bigbuckbunny"
    mode: Literal["scaled", "cropped", "letterbox", "pip"] = "scaled"

    @property
    def risk_category(self) -> Category | None:
        return Category.KNOWN_CONTENT


class FadeOverlay(_Overlay):
    kind: Literal["fade"] = "fade"
    to: Literal["black", "white"] = "black"

    @property
    def negative_kind(self) -> str | None:
        return "slow_fade"


Overlay = Annotated[
    FlashOverlay | QrOverlay | TextOverlay | RebroadcastOverlay | FadeOverlay, Field(discriminator="kind")
]


class Encoding(_Model):
    width: Annotated[int, Field(ge=64, le=3840, multiple_of=2)] = 1280
    height: Annotated[int, Field(ge=64, le=2160, multiple_of=2)] = 720
    fps: Annotated[int, Field(ge=5, le=60)] = 25
    gop_s: Annotated[float, Field(gt=0, le=10)] = 2.0
    segment_s: Annotated[float, Field(gt=0, le=30)] = 2.0
    bframes: Annotated[int, Field(ge=0, le=4)] = 2
    crf: Annotated[int, Field(ge=0, le=51)] = 23
    preset: str = "veryfast"
    codec: Literal["libx264", "libx265", "mpeg4"] = "libx264"
    audio: bool = False


class Scenario(_Model):
    name: str = "synthetic"
    seed: int = 0
    duration_s: Annotated[float, Field(gt=0, le=24 * 3600)]
    encoding: Encoding = Encoding()
    scenes: Annotated[tuple[Scene, ...], Field(min_length=1)]
    overlays: tuple[Overlay, ...] = ()

    @model_validator(mode="after")
    def _timeline(self) -> Scenario:
        starts = [s.start_s for s in self.scenes]
        if starts[0] != 0:
            raise ValueError("the first scene must start at 0")
        if starts != sorted(starts):
            raise ValueError("scenes must be in time order")
        for o in self.overlays:
            if o.start_s >= self.duration_s:
                raise ValueError(f"{o.kind} overlay starts at {o.start_s}s, after the stream ends")
        return self

    def scene_at(self, t: float) -> int:
        idx = 0
        for i, s in enumerate(self.scenes):
            if s.start_s <= t:
                idx = i
        return idx

    def scene_end(self, i: int) -> float:
        return self.scenes[i + 1].start_s if i + 1 < len(self.scenes) else self.duration_s

    def ground_truth(self) -> dict[str, Any]:
        labels, negatives = [], []
        for o in self.overlays:
            span = {"start_s": o.start_s, "end_s": min(o.end_s, self.duration_s)}
            params = o.model_dump(exclude={"start_s", "end_s"})
            if o.risk_category:
                labels.append({"category": o.risk_category.value, **span, "params": params})
            elif o.negative_kind:
                negatives.append({"kind": o.negative_kind, **span, "params": params})
        for i, s in enumerate(self.scenes):
            if s.negative_kind:
                negatives.append(
                    {
                        "kind": s.negative_kind,
                        "start_s": s.start_s,
                        "end_s": self.scene_end(i),
                        "params": s.model_dump(exclude={"start_s"}),
                    }
                )
        return {
            "stream": self.name,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "labels": sorted(labels, key=lambda x: (x["start_s"], x["category"])),
            "hard_negatives": sorted(negatives, key=lambda x: (x["start_s"], x["kind"])),
        }


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"cannot read scenario {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ScenarioError(f"scenario {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ScenarioError(f"scenario {path}: {where}: {err['msg']}") from None
