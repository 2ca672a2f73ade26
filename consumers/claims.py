"""Claim checks: a segment too large for a record travels as ``gopwatch-payload-uri``.

The worker fetches ``file://`` claim checks only from under ``claim_check_root`` (off unless set):
a path that resolves outside it, through ``..`` or a symlink, is refused, and so is a payload over
``max_segment_bytes``, checked before it is read.

``http(s)://`` claim checks (object storage, a presigned URL) are fetched only under a prefix of
``claim_check_urls`` (off unless set): the same scheme, host and port, a path under the prefix's
with no ``.`` or ``..`` segment (encoded or not), the query free (presigned URLs sign there).
Redirects are not followed (they could leave the prefix); a Content-Length over
``max_segment_bytes`` is refused before the body and a body is never read past it; the whole
fetch, retries included, has ``claim_check_timeout_s``. A timeout, a refused or reset connection,
HTTP 429 or 5xx is retried after a short pause while time is left; what still fails is the
record's dead letter with the reason, and the dead letter keeps the URI.
"""

from __future__ import annotations

import http.client
import posixpath
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from schemas.errors import InvalidMessageError
from streaming.errors import OversizedInputError

CHUNK = 256 * 1024
PAUSES_S = (0.25, 1.0)  # before the second and third attempt
_PORTS = {"http": 80, "https": 443}


def read_claim_check(uri: str, root: Path | None, max_bytes: int, urls: tuple[str, ...] = (),
                     timeout_s: float = 10.0) -> bytes:  # fmt: skip
    """The payload ``uri`` points to; InvalidMessageError or OversizedInputError with the reason."""
    parsed = urlsplit(uri)
    scheme = parsed.scheme
    if scheme in _PORTS:
        return fetch_claim_check(uri, urls, max_bytes, timeout_s)
    if scheme != "file":
        raise InvalidMessageError(f"claim-check scheme {scheme!r} is not fetched by this worker")
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


def allowed(uri: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``uri`` lies under one of ``prefixes`` (scheme, host and port equal, the path
    under the prefix's path taken as a folder, no dot segments, no user info or fragment)."""
    u = urlsplit(uri)
    path = unquote(u.path)
    try:
        port = u.port or _PORTS[u.scheme]
    except ValueError:  # not a number, or out of range
        return False
    if u.username or u.password or u.fragment or not u.hostname or "\\" in path:
        return False
    if any(part in (".", "..") for part in path.split("/")) or posixpath.normpath(path) != path.rstrip("/"):
        return False
    for prefix in prefixes:
        p = urlsplit(prefix)
        folder = unquote(p.path).rstrip("/") + "/"
        same_origin = (u.scheme, u.hostname, port) == (
            p.scheme, p.hostname, p.port or _PORTS.get(p.scheme, 0))  # fmt: skip
        if same_origin and path.startswith(folder) and len(path) > len(folder):
            return True
    return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx reaches the caller as an HTTPError


_opener = urllib.request.build_opener(_NoRedirect())


def fetch_claim_check(uri: str, prefixes: tuple[str, ...], max_bytes: int, timeout_s: float) -> bytes:
    """An http(s) claim check's payload (module docstring for the rules)."""
    if not prefixes:
        raise InvalidMessageError(
            "http(s) claim checks are off: set GOPWATCH_CLAIM_CHECK_URLS to their prefixes"
        )
    if not allowed(uri, prefixes):
        raise InvalidMessageError("claim-check URL is not under a prefix of GOPWATCH_CLAIM_CHECK_URLS")
    deadline = time.monotonic() + timeout_s
    for attempt, pause in enumerate((*PAUSES_S, None)):
        try:
            return _get(uri, max_bytes, deadline)
        except _Transient as e:
            left = deadline - time.monotonic()
            if pause is None or left <= pause:
                raise InvalidMessageError(
                    f"claim-check fetch failed after {attempt + 1} attempt(s): {e}"
                ) from None
            time.sleep(pause)
    raise AssertionError("unreachable")


class _Transient(Exception):
    """A failure worth another attempt."""


def _get(uri: str, max_bytes: int, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Transient("out of time")
    req = urllib.request.Request(uri, headers={"User-Agent": "gopwatch", "Accept-Encoding": "identity"})
    try:
        with _opener.open(req, timeout=left) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise OversizedInputError(f"claim-check payload of {length} bytes is over max_segment_bytes")
            parts, got = [], 0
            while chunk := resp.read1(min(CHUNK, max_bytes + 1 - got)):  # what has come, not a full chunk
                parts.append(chunk)
                got += len(chunk)
                if got > max_bytes:
                    raise OversizedInputError(f"claim-check payload is over max_segment_bytes ({max_bytes})")
                if time.monotonic() > deadline:
                    raise _Transient("body not read in time")
            if length is not None and length.isdigit() and got != int(length):
                raise _Transient(f"body cut at {got} of {length} bytes")  # read1 does not tell
            return b"".join(parts)
    except urllib.error.HTTPError as e:
        if e.code == 429 or e.code >= 500:
            raise _Transient(f"HTTP {e.code}") from None
        raise InvalidMessageError(f"claim-check fetch refused: HTTP {e.code} {e.reason}") from None
    except (
        urllib.error.URLError,
        http.client.HTTPException,
        TimeoutError,
        ConnectionError,
    ) as e:  # a cut body too
        raise _Transient(str(getattr(e, "reason", e)) or type(e).__name__) from None
