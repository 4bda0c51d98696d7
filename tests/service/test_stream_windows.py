"""StreamCutter cuts, chunk by chunk, exactly the windows `cut` makes of the whole clip: rows
(context, reflection and zero padding included), num_samples and times, for random window specs,
clip lengths and chunk sizes."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.engine.stream_windows import StreamCutter
from earshot.engine.windows import WindowSpec, cut


@pytest.mark.parametrize("edge", ["zeros", "reflect"])
def test_streamed_windows_are_the_whole_clips(edge):
    rng = np.random.default_rng(1 if edge == "zeros" else 2)
    trimmed = 0
    for _ in range(200):
        window = int(rng.integers(5, 60))
        spec = WindowSpec(16000, window, int(rng.integers(1, window + 1)), int(rng.integers(0, 12)),
                          int(rng.integers(0, 12)), edge)
        length = int(rng.integers(max(spec.before, spec.after) + 2, 500))
        clip = rng.standard_normal(length).astype(np.float32)
        whole = cut(clip, spec)
        cutter = StreamCutter(spec)
        parts = []
        position = 0
        while position < length:
            size = int(rng.integers(1, 60))
            parts.append(cutter.push(clip[position : position + size]))
            position += size
        trimmed += cutter.buffered < length
        parts.append(cutter.finish())
        got = [part for part in parts if part is not None]
        np.testing.assert_array_equal(np.concatenate([p.samples for p in got]), whole.samples)
        np.testing.assert_array_equal(np.concatenate([p.num_samples for p in got]), whole.num_samples)
        np.testing.assert_allclose(np.concatenate([p.start_s for p in got]), whole.start_s)
        np.testing.assert_allclose(np.concatenate([p.end_s for p in got]), whole.end_s)
    assert trimmed > 100  # most streams kept only what their next windows need


def test_an_empty_stream_has_no_windows():
    cutter = StreamCutter(WindowSpec(16000, 100, 50))
    assert cutter.push(np.zeros(0, dtype=np.float32)) is None and cutter.finish() is None
