"""Audio for the teacher: speech activity (silero-vad) and loudness, from a stream's audio track.

silero-vad's ONNX model ships in the ``silero-vad`` wheel (installed ``--no-deps``: its Python
helpers want torchaudio; we run the model with ONNX Runtime ourselves). It takes 512-sample chunks
of 16 kHz mono audio, each with the previous chunk's last 64 samples in front, and carries a
recurrent state from chunk to chunk; so one :class:`SileroVad` follows one stream.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np

from models.errors import ModelError

RATE = 16_000
CHUNK = 512
CONTEXT = 64


def model_path() -> Path:
    spec = find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("silero-vad is not installed (pip install --no-deps silero-vad)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


class SileroVad:
    """Speech probability per 32 ms chunk of 16 kHz mono float audio, streaming."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)
        self._rest = np.zeros(0, np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities for the complete chunks in ``audio`` (a remainder waits for the next call)."""
        x = np.concatenate([self._rest, np.asarray(audio, np.float32).ravel()])
        n = len(x) // CHUNK
        self._rest = x[n * CHUNK :]
        out = np.empty(n, np.float32)
        sr = np.array(RATE, np.int64)
        for i in range(n):
            chunk = x[i * CHUNK : (i + 1) * CHUNK][None]
            inp = np.concatenate([self._context, chunk], axis=1)
            prob, self._state = self.session.run(None, {"input": inp, "state": self._state, "sr": sr})
            self._context = chunk[:, -CONTEXT:]
            out[i] = float(prob.ravel()[0])
        return out


def level_dbfs(audio: np.ndarray) -> float:
    """RMS level in dBFS (full-scale sine: -3 dB; silence: -100)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    return max(20 * np.log10(rms + 1e-10), -100.0)


def decode_audio(source: bytes | str | Path) -> np.ndarray | None:
    """A file's first audio track as 16 kHz mono float32, or None without one."""
    import io

    import av

    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as c:
            if not c.streams.audio:
                return None
            res = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            parts = [
                f.to_ndarray().ravel() for frame in c.decode(c.streams.audio[0]) for f in res.resample(frame)
            ]
            parts += [f.to_ndarray().ravel() for f in res.resample(None)]
    except av.error.FFmpegError:
        return None
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
