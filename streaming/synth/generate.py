"""Random but reproducible scenarios: ``random_scenario(seed, minutes)`` is the same for the same seed.

The generator lays scenes of 6-16 s end to end, then places overlays one after another with gaps,
cycling through every risk category and every kind of hard negative so that even a one-minute
stream holds each kind at least once.
"""

from __future__ import annotations

import numpy as np

from streaming.synth.scenario import (
    CLIPS,
    PHOTOS,
    Encoding,
    FadeOverlay,
    FlashOverlay,
    Overlay,
    QrOverlay,
    RebroadcastOverlay,
    Scenario,
    Scene,
    TextOverlay,
)

RISK_TEXT = (
    "FREE CRYPTO GIVEAWAY",
    "DM ME ON TELEGRAM",
    "SEND BTC DOUBLE IT",
    "GUARANTEED PROFIT 500%",
    "ADD ME ON WHATSAPP",
    "CLAIM YOUR PRIZE NOW",
)
BENIGN_TEXT = ("GOOD GAME EVERYONE", "THANKS FOR WATCHING", "LEVEL 3 COMPLETE", "BRB 5 MIN")
SCENE_KINDS = ("photo", "clip", "talking_head", "game", "screen", "montage")
OVERLAY_CYCLE = (
    "flash",
    "text",
    "qr",
    "benign_text",
    "red_flash",
    "rebroadcast",
    "slow_strobe",
    "fade",
    "small_flash",
    "low_contrast_flash",
)


def _overlay(kind: str, start: float, end: float, rng: np.random.Generator) -> Overlay:
    if kind == "flash":
        return FlashOverlay(
            start_s=start, end_s=end, hz=float(rng.uniform(5, 9)), area=float(rng.uniform(0.4, 1))
        )
    if kind == "red_flash":
        return FlashOverlay(
            start_s=start,
            end_s=end,
            color="red",
            hz=float(rng.uniform(5, 9)),
            area=float(rng.uniform(0.4, 1)),
        )
    if kind == "slow_strobe":  # full contrast, large, but at most 2 flashes per second
        return FlashOverlay(start_s=start, end_s=end, hz=float(rng.uniform(1, 2)), area=0.8)
    if kind == "small_flash":  # fast but small: under the area threshold
        return FlashOverlay(start_s=start, end_s=end, hz=7, area=float(rng.uniform(0.01, 0.04)))
    if kind == "low_contrast_flash":  # fast, large, but a swing under 10% luminance
        return FlashOverlay(start_s=start, end_s=end, hz=7, area=0.8, contrast=0.05)
    if kind == "text":
        return TextOverlay(
            start_s=start,
            end_s=end,
            text=str(rng.choice(RISK_TEXT)),
            y=float(rng.uniform(0.15, 0.85)),
            size=float(rng.uniform(0.06, 0.11)),
        )
    if kind == "benign_text":
        return TextOverlay(
            start_s=start,
            end_s=end,
            text=str(rng.choice(BENIGN_TEXT)),
            y=float(rng.uniform(0.15, 0.85)),
            size=float(rng.uniform(0.06, 0.11)),
        )
    if kind == "qr":
        return QrOverlay(
            start_s=start,
            end_s=end,
            size=float(rng.uniform(0.25, 0.5)),
            x=float(rng.uniform(0.2, 0.8)),
            y=float(rng.uniform(0.3, 0.7)),
            style=str(rng.choice(["clean", "scanned"])),
            payload=f"https://pay.example/u/{int(rng.integers(1_000_000))}",
        )
    if kind == "rebroadcast":
        return RebroadcastOverlay(
            start_s=start,
            end_s=end,
            clip=str(rng.choice(CLIPS)),
            mode=str(rng.choice(["scaled", "cropped", "letterbox", "pip"])),
        )
    return FadeOverlay(start_s=start, end_s=end, to=str(rng.choice(["black", "white"])))


def random_scenario(
    seed: int,
    minutes: float = 1.0,
    encoding: Encoding | None = None,
    name: str | None = None,
) -> Scenario:
    rng = np.random.default_rng([seed, 0x5CE7])
    duration = round(minutes * 60.0, 3)
    scenes: list[Scene] = []
    t = 0.0
    kinds = list(SCENE_KINDS)
    rng.shuffle(kinds)
    while t < duration - 1e-6:
        kind = kinds[len(scenes) % len(kinds)]
        src = str(rng.choice(CLIPS)) if kind == "clip" else str(rng.choice(PHOTOS))
        scenes.append(
            Scene(
                start_s=round(t, 3),
                kind=kind,
                source=src if kind in ("photo", "clip", "talking_head") else None,
                motion=str(rng.choice(["pan", "zoom", "shake", "static"])),
                transition="cut" if not scenes or rng.random() < 0.6 else "fade",
                sprites=int(rng.integers(0, 3)),
            )
        )
        t += float(rng.uniform(6, 16))
    overlays: list[Overlay] = []
    cycle = list(OVERLAY_CYCLE)
    rng.shuffle(cycle)
    t = float(rng.uniform(1.5, 3.0))
    k = 0
    while True:
        length = float(rng.uniform(3.0, 6.0))
        if t + length > duration - 0.5:
            break
        overlays.append(_overlay(cycle[k % len(cycle)], round(t, 3), round(t + length, 3), rng))
        k += 1
        t += length + float(rng.uniform(3.0, 6.0))
    return Scenario(
        name=name or f"synth-{seed}",
        seed=seed,
        duration_s=duration,
        encoding=encoding or Encoding(),
        scenes=tuple(scenes),
        overlays=tuple(overlays),
    )
