"""The distillation corpus: teacher outputs cached once, student inputs under the decoder's cheap
options computed next to them (what `gopwatch eval --decoder` measures)."""

from __future__ import annotations

import numpy as np

from models.student import StudentConfig
from streaming.extract import ExtractConfig
from streaming.offline.corpus import build_stream


def test_cheap_decoder_options_reuse_the_teacher_and_change_only_the_inputs(small_stream, tmp_path):
    sc, data, _ = small_stream
    cfg = StudentConfig()
    full = build_stream("s", data, sc.ground_truth(), cfg, ("flash",), tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    iframes = build_stream("s", data, sc.ground_truth(), cfg, ("flash",), tmp_path,
                           extract=ExtractConfig(keyframes_only=True))  # fmt: skip
    assert len(list(tmp_path.iterdir())) == 1  # the cached teacher served both
    np.testing.assert_array_equal(full.teacher_feats, iframes.teacher_feats)
    np.testing.assert_array_equal(full.start_s, iframes.start_s)
    assert full.inputs["maps"].any() and not iframes.inputs["maps"].any()  # no motion, no residuals
    np.testing.assert_array_equal(full.inputs["thumb"], iframes.inputs["thumb"])  # same I-frames


def test_the_student_learns_text_present_and_the_words_are_left_to_the_cascade():
    from models.student import CATEGORIES
    from models.teacher.sources import DEFAULT_SOURCES, SOURCE_DIMS, feature_columns
    from streaming.offline.corpus import gop_labels, student_targets

    text = CATEGORIES.index("text_lexicon")
    starts, ends = np.array([0.0, 2.0, 4.0, 6.0]), np.array([2.0, 4.0, 6.0, 8.0])
    truth = {
        "labels": [{"category": "text_lexicon", "start_s": 2.0, "end_s": 4.0}],
        "hard_negatives": [
            {"kind": "benign_text", "start_s": 4.0, "end_s": 6.0},
            {"kind": "slow_strobe", "start_s": 6.0, "end_s": 8.0},
        ],
    }
    assert gop_labels(truth, starts, ends)[:, text].tolist() == [0, 1, 1, 0]  # scam text and a caption
    assert np.isnan(gop_labels(None, starts, ends)).all()

    dim = sum(SOURCE_DIMS.values())
    feats = np.zeros((4, dim), np.float32)
    ocr = feature_columns(DEFAULT_SOURCES, "ocr")
    assert ocr.stop - ocr.start == 4 and 0 < ocr.start < dim
    feats[[1, 2], ocr.start] = 1.0  # OCR saw text on GOPs 1 and 2
    scores = np.zeros((4, len(CATEGORIES)), np.float32)
    scores[1, text] = 1.0  # its lexicon matched on GOP 1 only
    target = student_targets(scores, feats, DEFAULT_SOURCES)
    assert target[:, text].tolist() == [0, 1, 1, 0]
    assert np.isnan(student_targets(scores, feats, ("flash",))[:, text]).all()
