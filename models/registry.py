"""The student's checkpoint and its model card: typed, with the sha256 that ties them together.

``student.pt`` holds the weights and the config; ``student.card.json`` says what data, settings and
teacher made it, its metrics, and the checkpoint's sha256. Loading checks both and refuses a
mismatch with one clear line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import CheckpointMismatchError, ModelError
from models.student import StudentConfig, StudentNet

SHIPPED = Path(__file__).parent / "weights"  # the checkpoint that ships with the package
CHECKPOINT = "student.pt"
CARD = "student.card.json"


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    config: dict[str, Any]
    sha256: str
    teacher: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True, default=_jsonable) + "\n"


def model_release(card: ModelCard, thresholds: dict[str, float]) -> str:
    """The version events carry: the card's version and the first 8 hex digits of a sha256 over the
    whole card (which holds the weights' sha256) and the thresholds in force. A candidate that
    changes only its card, or a deployment that overrides a threshold, is a different release, so
    its events never share ids with the shipped model's."""
    blob = card.to_json() + json.dumps(sorted(thresholds.items()))
    return f"{card.version}+{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _config_of(d: dict[str, Any]) -> StudentConfig:
    d = dict(d)
    d.setdefault("residual_scale", 8)  # checkpoints from before the field learnt from 1/8 residuals
    d.setdefault("residual_frames", "all")  # ... and from residuals of every frame
    for k in ("categories", "thumb_hw", "grid_hw"):
        d[k] = tuple(d[k])
    return StudentConfig(**d)


def save_student(
    folder: Path, net: StudentNet, card: ModelCard, feat_norm: dict[str, np.ndarray]
) -> ModelCard:
    """Write the checkpoint, then the card with the checkpoint's sha256 (returned)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in sorted(net.state_dict().items())}
    payload = {"config": net.cfg.to_dict(), "state_dict": state,
               "teacher_norm": {k: torch.from_numpy(v) for k, v in feat_norm.items()}}  # fmt: skip
    torch.save(payload, folder / CHECKPOINT)
    final = ModelCard(
        **{**card.__dict__, "config": net.cfg.to_dict(), "sha256": sha256_file(folder / CHECKPOINT)}
    )
    (folder / CARD).write_text(final.to_json())
    return final


def load_student(folder: Path) -> tuple[StudentNet, ModelCard]:
    ckpt, card_path = folder / CHECKPOINT, folder / CARD
    if not ckpt.exists() or not card_path.exists():
        raise ModelError(f"no student in {folder} (need {CHECKPOINT} and {CARD}); run `make train`")
    try:
        card = ModelCard(**json.loads(card_path.read_text()))
    except (ValueError, TypeError) as e:
        raise ModelError(f"model card {card_path} is unreadable: {e}") from None
    digest = sha256_file(ckpt)
    if digest != card.sha256:
        raise CheckpointMismatchError(
            f"{ckpt} has sha256 {digest[:12]}…, its model card says {card.sha256[:12]}…; the checkpoint "
            "was changed or belongs to another card"
        )
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    if json.loads(json.dumps(payload["config"])) != card.config:  # tuples vs JSON lists
        raise CheckpointMismatchError(f"{ckpt}: the config in the checkpoint differs from the model card's")
    net = StudentNet(_config_of(payload["config"]))
    if net.cfg.extra.get("pruned"):  # filters cut by `gopwatch prune`: the layers take the saved shapes
        from models.pruning import fit_to

        fit_to(net, payload["state_dict"])
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointMismatchError(
            f"{ckpt}: weights do not fit the config: {str(e).splitlines()[0]}"
        ) from None
    return net.eval(), card
