"""The distillation corpus: teacher outputs cached once, student inputs under the decoder's cheap
options computed next to them (what `gopwatch eval --decoder` measures)."""

from __future__ import annotations

import numpy as np

from models.student import StudentConfig
from streaming.corpus import build_stream
from streaming.extract import ExtractConfig


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
