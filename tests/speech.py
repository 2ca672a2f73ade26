"""Real synthetic speech for audio tests: eSpeak NG (the ``espeakng-loader`` wheel ships the library
and its voice data), driven through its C API with ctypes, 22.05 kHz mono int16."""

from __future__ import annotations

import ctypes

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def speak(text: str, rate_wpm: int = 150) -> tuple[np.ndarray, int]:
    """``text`` spoken in English: (float32 samples in [-1, 1], sample rate)."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError("eSpeak NG did not initialise")
    chunks: list[np.ndarray] = []

    def on_audio(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    cb = CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(cb)
    lib.espeak_SetVoiceByName(b"en")
    lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE
    data = text.encode() + b"\0"
    lib.espeak_Synth(data, len(data), 0, 0, 0, 0x1, None, None)  # espeakCHARS_UTF8
    lib.espeak_Synchronize()
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return pcm.astype(np.float32) / 32768.0, rate
