"""Errors of the pure per-stream processing (see :mod:`schemas.errors` for the whole tree).

PyAV's exceptions are translated here, at the one seam where bytes meet the demuxer/decoder
(:mod:`streaming.media`), so that callers see what was wrong with the *input*, never ``av.error``.
"""

from __future__ import annotations

from schemas.errors import GopwatchError


class MediaError(GopwatchError):
    """Bytes that cannot be turned into frames. ``str()`` is the dead-letter reason."""


class CorruptSegmentError(MediaError):
    """Garbage, truncated or empty payloads, or a container the demuxer cannot open."""


class UnsupportedCodecError(MediaError):
    """A codec gopwatch does not analyse (supported: H.264, HEVC (degraded), MPEG-4 Part 2)."""


class OversizedInputError(MediaError):
    """A payload or a frame size over the configured limits."""


class DecodeBudgetExceededError(MediaError):
    """Decoding one segment took longer than its per-segment budget."""


class SnapshotError(GopwatchError):
    """A stream-state snapshot that cannot be read (another format, corrupt) or used (another
    model version, missing segments)."""


class ScenarioError(GopwatchError):
    """A synthetic-stream scenario that is invalid or cannot be rendered."""
