"""Errors of the models package (see :mod:`schemas.errors` for the whole tree).

Foreign errors from torch, ONNX Runtime and FAISS are translated where they occur, into these.
"""

from __future__ import annotations

from schemas.errors import GopwatchError


class ModelError(GopwatchError):
    """Weights that cannot be found, loaded or verified; a model that cannot run."""


class CheckpointMismatchError(ModelError):
    """A checkpoint whose sha256 or config does not match its model card."""


class KbError(ModelError):
    """A knowledge base that cannot be read, or an example that cannot be added."""


class JpegError(ModelError):
    """A still that is not a complete, supported JPEG (the reason in one line)."""
