"""``srt://`` sources through Debian's ``srt-live-transmit`` (package ``srt-tools``).

The FFmpeg inside PyAV's wheels is built without libsrt, so an SRT URL cannot be opened directly.
The relay receives SRT (as the caller or, with ``?mode=listener``, as the server the encoder
connects to; it accepts the encoder again after a disconnect) and forwards the MPEG-TS to a UDP
port on loopback, which the segmenter reads like any live URL. UDP carries no end of connection,
so an SRT source has ended after ``--silence-s`` without packets.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from consumers.brokers.base import LOOPBACK
from consumers.errors import PublishError
from streaming.segmenter import LiveSource, Segment, segment_stream

RELAY = "srt-live-transmit"
FIFO_PACKETS = 50_000  # FFmpeg's UDP ring, in 188-byte TS packets: a few seconds of an HD stream


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class SrtRelay:
    """One ``srt-live-transmit`` process from ``url`` to a loopback UDP port, for a ``with`` block."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.gettempdir()) / "gopwatch-srt-relay.log"

    @property
    def reader_url(self) -> str:
        return f"udp://{LOOPBACK}:{self.port}?overrun_nonfatal=1&fifo_size={FIFO_PACKETS}"

    def __enter__(self) -> SrtRelay:
        exe = shutil.which(RELAY)
        if exe is None:
            raise PublishError(f"{self.url}: srt:// needs {RELAY} (apt-get install srt-tools); "
                               "this FFmpeg has no SRT protocol")  # fmt: skip
        self.port = _free_udp_port()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-q", "-a:yes", self.url, f"udp://{LOOPBACK}:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def srt_segments(url: str, segment_s: float, live: LiveSource) -> Iterator[Segment]:
    """The segments of an SRT source, read through a relay that lives as long as this iterator."""
    with SrtRelay(url) as relay:
        yield from segment_stream(relay.reader_url, segment_s, live=live)
