"""A live ingest on loopback for tests and benchmarks: nginx with its RTMP module (RTMP in, HLS and
the stat page out) and an encoder that pushes a video file to it in real time.

nginx and ``libnginx-mod-rtmp`` come from Debian (``.ci/run`` installs them). The server runs in
the foreground with one process, in a folder of its own, on free loopback ports.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av

from consumers.brokers.base import LOOPBACK, free_port

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def available() -> str | None:
    """None when nginx with the RTMP module is installed, else what is missing."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (apt-get install nginx libnginx-mod-rtmp)"
    if not RTMP_MODULE.exists():
        return f"{RTMP_MODULE} is missing (apt-get install libnginx-mod-rtmp)"
    return None


class NginxRtmp:
    """``rtmp://127.0.0.1:<port>/live/<key>`` in; ``http://127.0.0.1:<http>/hls/<key>.m3u8`` and
    ``/stat`` (nginx-rtmp's XML statistics) out."""

    def __init__(self, workdir: Path, fragment_s: float = 1.0) -> None:
        self.dir = workdir
        self.fragment_s = fragment_s
        self.rtmp_port = self.http_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "logs" / "error.log"

    def url(self, key: str) -> str:
        return f"rtmp://{LOOPBACK}:{self.rtmp_port}/live/{key}"

    def hls_url(self, key: str) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/hls/{key}.m3u8"

    @property
    def stat_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/stat"

    def _config(self) -> str:
        d = self.dir
        temp = " ".join(
            f"{k}_temp_path {d}/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""load_module {RTMP_MODULE};
daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/logs/error.log info;
events {{ worker_connections 256; }}
rtmp {{ server {{ listen {LOOPBACK}:{self.rtmp_port}; chunk_size 4096;
  application live {{ live on; record off; wait_video on; play_restart on;
    hls on; hls_path {d}/hls; hls_fragment {round(self.fragment_s * 1000)}ms;
    hls_playlist_length 20s; hls_cleanup on; }} }} }}
http {{ access_log off; {temp}
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; text/xml xml; }}
  server {{ listen {LOOPBACK}:{self.http_port};
    location /hls/ {{ root {d}; add_header Cache-Control no-cache; }}
    location /stat {{ rtmp_stat all; }} }} }}
"""

    def start(self, timeout_s: float = 10.0) -> None:
        missing = available()
        if missing:
            raise RuntimeError(missing)
        for sub in ("logs", "hls", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.rtmp_port, self.http_port = free_port(), free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection((LOOPBACK, self.rtmp_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen within {timeout_s} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def push(
    media: bytes | Path,
    url: str,
    *,
    audio: bool = True,
    offset_s: float = 0.0,
    on_packet: Callable[[float, float], None] | None = None,
    stop: threading.Event | None = None,
) -> float:
    """Push ``media`` to ``url`` as FLV at the speed of a live encoder (each packet at the wall time
    of its decode timestamp), like ``ffmpeg -re … -f flv``. ``on_packet(pts_s, wall)`` sees every
    video packet as it leaves. Returns the wall time the push started."""
    src_io = io.BytesIO(media) if isinstance(media, bytes) else str(media)
    with av.open(src_io) as src, av.open(url, "w", format="flv") as dst:
        streams = [src.streams.video[0]] + ([src.streams.audio[0]] if audio and src.streams.audio else [])
        outs = {s.index: dst.add_stream_from_template(s) for s in streams}
        vs = streams[0]
        t0 = time.monotonic()
        start: float | None = None
        for pkt in src.demux(streams):
            if pkt.dts is None or (stop is not None and stop.is_set()):
                continue
            t = float(pkt.dts * pkt.time_base)
            start = t if start is None else start
            due = t0 + (t - start) - offset_s
            time.sleep(max(0.0, due - time.monotonic()))
            is_video = pkt.stream.index == vs.index
            pkt.stream = outs[pkt.stream.index]
            dst.mux(pkt)
            if is_video and on_packet is not None and pkt.pts is not None:
                on_packet(float(pkt.pts * pkt.time_base), time.monotonic())
    return t0
