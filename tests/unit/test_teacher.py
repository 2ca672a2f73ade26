"""Teacher sources on real inputs with real weights; every positive has its paired negative."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno
import torch

from models.teacher.sources import FlashSource, MotionSource, NsfwSource, OcrSource, QrSource
from schemas.events import Category
from streaming.synth.assets import cover, photo


def _still(name: str = "coffee", w: int = 640, h: int = 360) -> np.ndarray:
    return cover(photo(name), w, h)


def test_efficientnet_lite0_recognises_imagenet_classes():
    from models.teacher.efficientnet import efficientnet_lite0, preprocess

    net = efficientnet_lite0()
    with torch.inference_mode():
        for name, classes in (("chelsea", range(281, 286)), ("coffee", (967, 968))):
            x = torch.from_numpy(cover(photo(name), 224, 224))[None]
            top = int(net(preprocess(x)).argmax())
            assert top in classes, (name, top)
        emb = net.forward_features(preprocess(x))
    assert emb.shape == (1, 1280)


@pytest.mark.parametrize("reader", ["opencv", "zxing"])
def test_qr_source_decodes_a_generated_code_and_not_a_plain_photo(reader):
    img = _still()
    m = np.array(segno.make("https://pay.example/x", error="m").matrix, bool)
    tile = cv2.resize(
        np.where(np.pad(m, 4), 0, 255).astype(np.uint8), (200, 200), interpolation=cv2.INTER_NEAREST
    )
    with_qr = img.copy()
    with_qr[80:280, 400:600] = tile[..., None]
    qr = QrSource(reader=reader)
    hit = qr(with_qr[None], 25.0)
    assert hit.scores[Category.QR_CODE] == 1.0 and hit.detail["payloads"] == ["https://pay.example/x"]
    assert qr(img[None], 25.0).scores[Category.QR_CODE] == 0.0


@pytest.fixture(scope="module")
def ocr() -> OcrSource:
    return OcrSource()


def _with_text(text: str) -> np.ndarray:
    img = _still("astronaut")
    cv2.rectangle(img, (30, 250), (610, 320), (20, 20, 20), -1)
    cv2.putText(img, text, (45, 300), cv2.FONT_HERSHEY_DUPLEX, 1.3, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def test_ocr_reads_lexicon_text_on_a_real_image(ocr):
    out = ocr(_with_text("DM ME ON TELEGRAM")[None], 25.0)
    assert out.scores[Category.TEXT_LEXICON] == 1.0
    assert "dm me on telegram" in out.detail["lexicon_hits"]


def test_ocr_benign_text_is_text_but_not_a_risk(ocr):
    out = ocr(_with_text("GOOD GAME EVERYONE")[None], 25.0)
    assert out.scores[Category.TEXT_LEXICON] == 0.0
    assert out.features[0] == 1.0 and "GAME" in out.detail["text"].upper()


def test_flash_source_fires_on_flashing_frames_only():
    base = np.repeat(_still()[None], 50, axis=0)
    flashing = base.copy()
    for i in range(50):
        flashing[i, :, :] = 240 if (i // 2) % 2 == 0 else 10  # 6.25 flashes a second, full frame
    slow = base.copy()
    for i in range(50):
        slow[i, :, :] = 240 if (i // 12) % 2 == 0 else 10  # about 1 flash a second
    assert FlashSource()(flashing, 25.0).scores[Category.PHOTOSENSITIVE_FLASH] == 1.0
    assert FlashSource()(slow, 25.0).scores[Category.PHOTOSENSITIVE_FLASH] == 0.0


def test_motion_source_sees_a_pan_and_not_a_still():
    img = cover(photo("rocket"), 800, 360)
    pan = np.stack([img[:, i * 6 : i * 6 + 640] for i in range(10)])
    still = np.stack([img[:, :640]] * 10)
    assert MotionSource()(pan, 25.0).features[0] > 5 * MotionSource()(still, 25.0).features[0] + 0.01


def test_nsfw_scores_a_benign_photo_low():
    p = float(NsfwSource()(_still("coffee")[None], 25.0).features[0])
    assert 0.0 <= p < 0.2


def test_mtcnn_finds_the_astronauts_face_and_no_face_in_a_cat_or_a_rocket():
    from skimage import data

    from models.teacher.faces import MTCNN

    m = MTCNN()
    boxes = m.detect(data.astronaut())
    assert len(boxes) == 1 and boxes[0, 4] > 0.99
    x1, y1, x2, y2 = boxes[0, :4]
    assert 150 < x1 < 200 and 40 < y1 < 90 and 240 < x2 < 300 and 150 < y2 < 200  # her face
    for img in (data.chelsea(), data.rocket(), data.coffee()):
        assert len(m.detect(img)) == 0


def test_face_source_features():
    from skimage import data

    from models.teacher.sources import FaceSource

    out = FaceSource()(data.astronaut()[None], 25.0)
    assert out.detail["faces"] == 1 and out.features[1] > 0.99 and 0.1 < out.features[2] <= 1
    assert FaceSource()(data.rocket()[None], 25.0).features.tolist() == [0.0, 0.0, 0.0]


def test_silero_vad_hears_real_speech_and_not_silence_tone_or_noise():
    from models.teacher.audio import RATE, SileroVad, level_dbfs
    from tests.speech import speak

    speech, sr = speak("Send your bank details now to claim the free crypto giveaway before it ends.")
    speech = cv2.resize(speech[None], (round(len(speech) * RATE / sr), 1), interpolation=cv2.INTER_LINEAR)[0]
    t = np.arange(RATE) / RATE
    others = {
        "silence": np.zeros(RATE, np.float32),
        "tone": (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "noise": (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32),
    }
    vad = SileroVad()
    assert (vad(speech) > 0.5).mean() > 0.7
    for name, x in others.items():
        vad.reset()
        assert (vad(x) > 0.5).mean() < 0.05, name
    assert level_dbfs(others["silence"]) == -100 and -14 < level_dbfs(others["tone"]) < -13


def test_audio_source_reads_a_streams_audio_track(tmp_path):
    import av

    from models.teacher.audio import RATE, decode_audio
    from models.teacher.sources import AudioSource, run_sources
    from tests.speech import speak

    speech, sr = speak("This is a live stream with a voice over.")
    path = tmp_path / "talk.mp4"
    with av.open(str(path), "w") as out:  # a video with an AAC track of the speech
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("aac", rate=sr)
        a.layout = "mono"
        for i in range(int(len(speech) / sr * 25)):
            f = av.VideoFrame(64, 48, "yuv420p")
            f.pts = i
            out.mux(v.encode(f))
        pcm = (speech * 32767).astype(np.int16)[None]
        af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        af.sample_rate, af.pts = sr, 0
        out.mux(a.encode(af))
        out.mux(a.encode(None))
        out.mux(v.encode(None))
    audio = decode_audio(path)
    assert audio is not None and abs(len(audio) / RATE - len(speech) / sr) < 0.2
    frames = np.zeros((2, 48, 64, 3), np.uint8)
    (out,) = run_sources([AudioSource()], frames, 25.0, audio)
    assert out.features[0] == 1 and out.detail["speech"] > 0.5 and out.detail["level_dbfs"] > -40
    assert decode_audio(tiny_silent_video(tmp_path)) is None
    assert run_sources([AudioSource()], frames, 25.0, None)[0].features.tolist() == [0, 0, 0, 0]


def tiny_silent_video(tmp_path):
    from tests.conftest import tiny_video

    p = tmp_path / "silent.mp4"
    p.write_bytes(tiny_video("libx264", "mp4"))
    return p
