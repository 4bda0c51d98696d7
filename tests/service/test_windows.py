"""Cutting waveforms into a bundle's fixed windows: counts, padding, real-sample counts, timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.engine.windows import WindowSpec, count_windows, cut, window_spec

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


CONTEXT_SPEC = WindowSpec(
    sample_rate=16_000, window_samples=1_600, hop_samples=800, before=200, after=40, edge="reflect"
)


def test_interior_windows_carry_the_clips_real_neighbours() -> None:
    waveform = np.random.default_rng(1).standard_normal(4_000).astype(np.float32)
    windows = cut(waveform, CONTEXT_SPEC)
    assert windows.samples.shape == (4, 200 + 1_600 + 40) and CONTEXT_SPEC.input_samples == 1_840
    for index in (1, 2):  # starts 800 and 1600: context on both sides lies inside the clip
        start = index * 800
        np.testing.assert_array_equal(windows.samples[index], waveform[start - 200 : start + 1_640])
    # counts, real samples and timestamps are the window's own span's, context or not
    assert len(windows) == count_windows(4_000, CONTEXT_SPEC) == len(cut(waveform, SPEC))
    assert windows.num_samples.tolist() == [1_600] * 4
    assert windows.start_s.tolist() == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert windows.end_s.tolist() == pytest.approx([0.1, 0.15, 0.2, 0.25])


def test_context_outside_the_clip_is_its_reflection() -> None:
    waveform = np.random.default_rng(2).standard_normal(4_000).astype(np.float32)
    reflected = np.pad(waveform, (200, 40), mode="reflect")  # torch.stft center=True's padding
    windows = cut(waveform, CONTEXT_SPEC)
    np.testing.assert_array_equal(windows.samples[0], reflected[:1_840])  # waveform[200:0:-1] first
    np.testing.assert_array_equal(windows.samples[0, :200], waveform[200:0:-1])
    # the last window ends on the clip's end: its 40 samples after are the reflection
    np.testing.assert_array_equal(windows.samples[-1], reflected[2_400 : 2_400 + 1_840])
    np.testing.assert_array_equal(windows.samples[-1, -40:], waveform[-2:-42:-1])


def test_a_window_ending_inside_the_clip_reflects_past_its_end_and_the_last_one_is_zeros() -> None:
    waveform = np.random.default_rng(3).standard_normal(4_020).astype(np.float32)  # 20 samples past 4000
    windows = cut(waveform, CONTEXT_SPEC)
    assert len(windows) == 5 and windows.num_samples.tolist() == [1_600] * 4 + [820]
    # window 3 spans 2400..4000, inside the clip; its context 4000..4040 is 20 real samples, then
    # 20 reflected ones, although window 4's span holds zeros there
    reflected = np.pad(waveform, (0, 20), mode="reflect")
    np.testing.assert_array_equal(windows.samples[3], reflected[2_200:4_040])
    # window 4 spans 3200..4800 and runs past the end: zeros from the end on, context included
    np.testing.assert_array_equal(windows.samples[4, : 200 + 820], waveform[3_000:4_020])
    assert not windows.samples[4, 200 + 820 :].any()


def test_zeros_edge_pads_the_context_with_zeros() -> None:
    spec = WindowSpec(sample_rate=16_000, window_samples=1_600, hop_samples=800, before=200, after=40)
    waveform = np.ones(4_020, dtype=np.float32)
    windows = cut(waveform, spec)
    assert not windows.samples[0, :200].any() and windows.samples[0, 200:].all()
    np.testing.assert_array_equal(windows.samples[3, -20:], 0.0)  # context after 4000: 20 real samples, 20 zeros
    assert windows.samples[3, :-20].all()


def test_a_clip_shorter_than_the_context_is_reflected_again_and_again() -> None:
    waveform = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    windows = cut(waveform, CONTEXT_SPEC)
    assert len(windows) == 1 and windows.num_samples.tolist() == [3]
    np.testing.assert_array_equal(windows.samples[0, 196:203], [1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0])
    assert not windows.samples[0, 203:].any()


def test_window_spec_comes_from_the_manifest() -> None:
    from earshot import bundle

    manifest = bundle.Manifest(
        name="ctx", family="test", sample_rate=16_000, window_samples=1_600, hop_samples=800,
        embedding_dim=4, num_labels=0, precision="fp32", padding=bundle.Padding("zeros", "zero-padded"),
        inputs=[bundle.TensorSpec("waveform", "float32", ["batch", 1_840])],
        outputs=[bundle.TensorSpec("embedding", "float32", ["batch", 4])],
        context=bundle.Context(before=200, after=40, edge="reflect"),
    )
    assert window_spec(manifest) == CONTEXT_SPEC
    with pytest.raises(ValueError):
        WindowSpec(sample_rate=16_000, window_samples=1_600, hop_samples=800, before=-1)
