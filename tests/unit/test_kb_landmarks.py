"""The knowledge base's landmarks: peak pairs matched by their time offset hold a sound under noise
and a voice-over, where the audio vector drifts; the index aligns, removes and replaces; examples
carry them on the wire and on disk; the live path and retroactive matching use them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from models.errors import KbError
from models.kb import audio
from models.kb import landmarks as lm
from models.kb.base import AUDIO, LANDMARKS, Example, KnowledgeBase
from models.kb.wire import decode_example, encode_example
from streaming.kb import StreamMatcher
from streaming.media import decode_pcm
from streaming.synth.assets import clip_path
from streaming.synth.encode import write_sound

RNG = np.random.default_rng(3)
STARTS = np.arange(1.55, 3.31, 0.25)  # 2 s windows inside bigbuckbunny's 5.3 s of sound


@pytest.fixture(scope="module")
def bbb() -> np.ndarray:
    pcm = decode_pcm(clip_path("bigbuckbunny"), audio.RATE, 60)
    assert pcm is not None and len(pcm) > 5 * audio.RATE
    return pcm


def windows(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[int(s * audio.RATE) : int(s * audio.RATE) + audio.WINDOW] for s in STARTS]


def test_landmarks_hold_a_sound_under_noise_and_a_voice_over_where_the_vector_drifts(bbb):
    index = lm.LandmarkIndex.build([("bbb", lm.example_landmarks(bbb, lm.MAX_MARKS))])
    vectors, _ = audio.example_vectors(bbb, 1000)
    t_marks, t_vec = KnowledgeBase().threshold("x", LANDMARKS), KnowledgeBase().threshold("x", AUDIO)
    noisy = bbb + RNG.normal(0, bbb.std() * 10 ** (-10 / 20), len(bbb)).astype(np.float32)  # 10 dB SNR
    voice_over = bbb + bbb[::-1] * 0.5  # another voice 6 dB under the sound
    for name, copy, vector_found in (("noise", noisy, 0), ("voice-over", voice_over, 3)):
        marks = [index.search([lm.landmarks(w)])[0].get("bbb", 0.0) for w in windows(copy)]
        sims = [float((vectors @ audio.audio_vector(w)).max()) for w in windows(copy)]
        assert sum(s >= t_marks for s in marks) >= len(STARTS) - 1, (name, marks)
        assert sum(s >= t_vec for s in sims) <= vector_found, (name, sims)
    others = {
        "white noise": RNG.normal(0, 0.1, audio.WINDOW).astype(np.float32),
        "a tone": (0.3 * np.sin(np.arange(audio.WINDOW) * 2 * np.pi * 440 / audio.RATE)).astype(np.float32),
        "the sound reversed": bbb[::-1][audio.RATE : audio.RATE + audio.WINDOW].copy(),
    }
    for name, other in others.items():
        assert index.search([lm.landmarks(other)]) == [{}], name
    assert len(lm.landmarks(np.zeros(audio.WINDOW, np.float32))) == 0  # silence has no peaks


def test_the_index_counts_hashes_at_one_offset_and_forgets_removed_examples():
    hashes = RNG.integers(1, 1 << 21, 200).astype(np.int32)
    frames = np.sort(RNG.integers(0, 2000, 200)).astype(np.int32)
    example = np.stack([hashes, frames], axis=1)
    index = lm.LandmarkIndex.build([("a", example)])
    shifted = np.stack([hashes[50:100], frames[50:100] - 40], axis=1)  # the same pairs, 40 frames later
    assert index.hits(shifted) == {"a": 50}
    jittered = shifted + np.stack([np.zeros(50), RNG.integers(-1, 2, 50)], axis=1).astype(np.int32)
    assert index.hits(jittered) == {"a": 50}  # a frame either way still lines up
    scattered = np.stack([hashes[50:100], RNG.integers(0, 5000, 50)], axis=1).astype(np.int32)
    assert index.hits(scattered)["a"] < 10  # the same hashes at random times: chance
    assert index.search([shifted]) == [{"a": 1.0}]
    assert index.search([shifted[: lm.MIN_HITS - 1]]) == [{}]  # too few to be more than chance
    both = lm.LandmarkIndex.build([("a", example), ("b", example[::-1].copy())])  # sorted once
    assert both.hits(shifted) == {"a": 50, "b": 50} and len(both) == 400
    index.add("b", example)
    index.add("a", example[:10])  # replaced: only its new rows remain
    assert index.hits(shifted) == {"b": 50} and len(index) == 210
    index.remove("b")
    assert index.hits(shifted) == {} and len(index) == 10


def test_examples_carry_landmarks_on_the_wire_and_on_disk(bbb, tmp_path):
    vectors, starts = audio.example_vectors(bbb, 1000)
    marks = lm.example_landmarks(bbb, lm.MAX_MARKS)
    song = Example("song", "banned_song", vectors, positions=starts, modality=AUDIO, marks=marks)
    back = decode_example(b"song", encode_example(song))
    assert back.digest() == song.digest() and back.marks is not None and np.array_equal(back.marks, marks)
    kb = KnowledgeBase(thresholds={"banned_song:landmarks": 0.2})
    kb.add(song)
    kb.save(tmp_path / "kb")
    loaded = KnowledgeBase.load(tmp_path / "kb")
    assert loaded.version == kb.version and loaded.vector_count(LANDMARKS) == len(marks)
    assert loaded.threshold("banned_song", LANDMARKS) == 0.2
    run = [lm.landmarks(w) for w in windows(bbb)[:2]]
    m = loaded.match(run, LANDMARKS)
    assert m is not None and m.example_id == "song" and m.modality == LANDMARKS
    with pytest.raises(KbError):
        decode_example(b"song", encode_example(song)[:-8])  # a landmark short
    with pytest.raises(KbError):  # landmarks belong to sound, not to a picture alone
        Example("p", "x_y", np.eye(1, 63, dtype=np.float32), marks=marks)
    with pytest.raises(KbError):
        Example("s", "x_y", vectors, modality=AUDIO, marks=marks.astype(np.int64))


def test_a_negative_recording_allow_lists_its_own_sound(bbb):
    kb = KnowledgeBase()
    marks = lm.example_landmarks(bbb, lm.MAX_MARKS)
    vectors, _ = audio.example_vectors(bbb, 1000)
    kb.add(Example("song", "banned_song", vectors, modality=AUDIO, marks=marks))
    run = [lm.landmarks(w) for w in windows(bbb)[:2]]
    assert kb.match(run, LANDMARKS) is not None
    kb.add(Example("bumper", "banned_song", vectors, negative=True, modality=AUDIO, marks=marks))
    assert kb.match(run, LANDMARKS) is None  # the platform's own sound: as close, so allowed


def test_retroactive_matching_finds_a_sound_taught_after_it_was_heard(bbb):
    kb = KnowledgeBase(thresholds={"banned_song:audio": 1.0})  # only the landmarks can decide
    matcher = StreamMatcher(kb)
    noisy = bbb + RNG.normal(0, bbb.std() * 0.1, len(bbb)).astype(np.float32)  # 20 dB SNR
    thumb = np.zeros((90, 160, 3), np.uint8)
    for k, end in enumerate(range(2, 6)):
        w = noisy[(end - 2) * audio.RATE : end * audio.RATE]
        assert matcher.push(thumb, k, k + 1.0, audio.live_vectors(w), lm.landmarks(w)) is None
    vectors, _ = audio.example_vectors(bbb, 1000)
    kb.add(Example("song", "banned_song", vectors, modality=AUDIO, marks=lm.example_landmarks(bbb, 10**5)))
    seen = matcher.seen("song")
    assert seen is not None and seen.match.modality == LANDMARKS and seen.end_s - seen.start_s >= 2


def test_the_live_path_matches_a_sound_by_its_landmarks_under_noise(bbb, tmp_path):
    """A WAV of bigbuckbunny's sound taught, with the audio vector's threshold out of reach: the
    bikes picture with that sound under noise, as AAC in MPEG-TS, opens the example's event."""
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.kb import example_from_file
    from streaming.pipeline import LivePath, analyze_source
    from tests.unit.test_kb_audio import mux

    wav = tmp_path / "soundtrack.wav"
    with av.open(str(wav), "w") as out:
        s = out.add_stream("pcm_s16le", rate=audio.RATE)
        s.layout = "mono"
        write_sound(out, s, bbb, audio.RATE)
    song = example_from_file(wav, "banned_song", "song")
    assert song.marks is not None and len(song.marks) > 300
    kb = KnowledgeBase(thresholds={"banned_song:audio": 1.0})
    kb.add(song)
    live = LivePath.load(Settings(), SHIPPED, cascade=False, kb=kb)

    def events(path: Path) -> list:
        return [e for r in analyze_source(path, live.session(path.stem)) for e in r.events]

    noisy = bbb + RNG.normal(0, bbb.std() * 10 ** (-15 / 20), len(bbb)).astype(np.float32)
    hits = [
        e
        for e in events(mux(clip_path("bikes"), noisy, tmp_path / "noisy.ts"))
        if e.category == "banned_song"
    ]
    cited = hits[0].evidence.nearest_examples[0]
    assert cited.example_id == "song" and cited.space == "landmarks"  # the share's scale, not a cosine
    other = RNG.normal(0, 0.05, len(bbb)).astype(np.float32)
    assert not [
        e
        for e in events(mux(clip_path("bikes"), other, tmp_path / "other.ts"))
        if e.category == "banned_song"
    ]


def test_a_gop_searched_before_an_add_is_searched_again_after_it(bbb):
    """The matcher keeps each GOP's search for the next run; an example added in between must
    not be missed because the earlier GOP's search predates it."""
    reversed_bbb = bbb[::-1].copy()
    kb = KnowledgeBase(thresholds={"banned_song:audio": 1.0})  # only the landmarks can decide
    vectors, _ = audio.example_vectors(reversed_bbb, 1000)
    kb.add(
        Example(
            "other", "banned_song", vectors, modality=AUDIO, marks=lm.example_landmarks(reversed_bbb, 10**5)
        )
    )
    matcher = StreamMatcher(kb)
    thumb = np.zeros((90, 160, 3), np.uint8)
    w = windows(bbb)
    assert matcher.push(thumb, 0.0, 1.0, None, lm.landmarks(w[0])) is None
    assert matcher.push(thumb, 1.0, 2.0, None, lm.landmarks(w[3])) is None  # both searched, no song yet
    vectors, _ = audio.example_vectors(bbb, 1000)
    kb.add(Example("song", "banned_song", vectors, modality=AUDIO, marks=lm.example_landmarks(bbb, 10**5)))
    m = matcher.push(thumb, 2.0, 3.0, None, lm.landmarks(w[7]))  # the run: w[3] (searched before) and w[7]
    assert m is not None and m.example_id == "song" and m.modality == LANDMARKS
