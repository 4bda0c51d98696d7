"""Cutting waveforms into a bundle's fixed windows: counts, padding, real-sample counts, timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.service.engine.windows import WindowSpec, count_windows, cut

SPEC = WindowSpec(sample_rate=16_000, window_samples=1_600, hop_samples=800)


def test_a_clip_shorter_than_a_window_gives_one_zero_padded_window() -> None:
    waveform = np.arange(1, 501, dtype=np.float32)  # 500 samples, 31.25 ms
    windows = cut(waveform, SPEC)
    assert len(windows) == 1
    assert windows.samples.shape == (1, 1_600)
    np.testing.assert_array_equal(windows.samples[0, :500], waveform)
    assert not windows.samples[0, 500:].any()
    assert windows.num_samples.tolist() == [500]
    assert windows.start_s.tolist() == [0.0]
    assert windows.end_s.tolist() == pytest.approx([500 / 16_000])


def test_overlapping_windows_cover_the_clip_and_the_last_one_is_partial() -> None:
    longer = np.random.default_rng(0).standard_normal(4_100).astype(np.float32)
    waveform = longer[:4_000]  # 0.25 s
    windows = cut(waveform, SPEC)
    # starts 0, 800, 1600, 2400: the window at 2400 reaches 4000, the end of the clip
    assert len(windows) == 4 == count_windows(4_000, SPEC)
    assert windows.num_samples.tolist() == [1_600, 1_600, 1_600, 1_600]
    for index, start in enumerate(range(0, 3_200, 800)):
        np.testing.assert_array_equal(windows.samples[index], waveform[start : start + 1_600])
    assert windows.start_s.tolist() == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert windows.end_s.tolist() == pytest.approx([0.1, 0.15, 0.2, 0.25])

    windows = cut(longer, SPEC)  # 100 samples more need one more, mostly padded window
    assert len(windows) == 5
    assert windows.num_samples.tolist()[-1] == 900
    np.testing.assert_array_equal(windows.samples[-1, :900], longer[3_200:4_100])
    assert not windows.samples[-1, 900:].any()
    assert windows.end_s[-1] == pytest.approx(4_100 / 16_000)  # clipped to the clip's end


def test_exact_multiples_need_no_padding() -> None:
    spec = WindowSpec(sample_rate=16_000, window_samples=1_600, hop_samples=1_600)
    windows = cut(np.ones(4_800, dtype=np.float32), spec)
    assert len(windows) == 3
    assert windows.num_samples.tolist() == [1_600] * 3
    assert windows.samples.all()
    assert windows.end_s.tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_empty_or_multichannel_waveforms_are_refused() -> None:
    with pytest.raises(ValueError):
        cut(np.zeros(0, dtype=np.float32), SPEC)
    with pytest.raises(ValueError):
        cut(np.zeros((2, 100), dtype=np.float32), SPEC)
