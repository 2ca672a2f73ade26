"""Claim checks: a segment too large for a record travels as ``gopwatch-payload-uri``.

The worker fetches ``file://`` claim checks only from under ``claim_check_root`` (off unless set):
a path that resolves outside it, through ``..`` or a symlink, is refused, and so is a payload over
``max_segment_bytes``, checked before it is read. Other schemes (``http(s)://``) are refused with
a clear reason: the worker makes no outbound requests.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from schemas.errors import InvalidMessageError
from streaming.errors import OversizedInputError


def read_claim_check(uri: str, root: Path | None, max_bytes: int) -> bytes:
    """The payload ``uri`` points to; InvalidMessageError or OversizedInputError with the reason."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise InvalidMessageError(f"claim-check scheme {parsed.scheme!r} is not fetched by this worker")
    if root is None:
        raise InvalidMessageError("file claim checks are off: set GOPWATCH_CLAIM_CHECK_ROOT to their folder")
    base = root.resolve()
    path = Path(unquote(parsed.path)).resolve()  # follows symlinks: where the bytes really are
    if not path.is_relative_to(base):
        raise InvalidMessageError(f"claim-check path is outside the claim-check root {base}")
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            if size > max_bytes:
                raise OversizedInputError(f"claim-check payload of {size} bytes is over max_segment_bytes")
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise InvalidMessageError(f"claim-check payload unreadable: {e.strerror}") from None
    if len(data) > max_bytes:  # grew since the stat
        raise OversizedInputError(f"claim-check payload is over max_segment_bytes ({max_bytes})")
    return data
