"""Cut a stream into a bundle's windows as its samples arrive: the windows (rows, context and all)
that `windows.cut` makes of the whole clip, each as soon as the samples it needs are in.

Window i needs the clip's samples [i * hop - before, i * hop + window + after). While the stream
runs, a window is ready once all of them have arrived (before the clip's start, the context is
the clip's start padded per the bundle's edge, as `cut` pads it); the windows that reach past the
end wait for `finish`, which knows the clip's length and completes them exactly as `cut` does
(zero-padded spans, the end's context per the edge). Only the samples still needed are kept, so a
stream may run for hours.
"""

from __future__ import annotations

import numpy as np

from earshot.engine.windows import Windows, WindowSpec, count_windows, cut


class StreamCutter:
    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.received = 0  # samples of the clip so far
        self.next_index = 0  # the first window not yet cut
        self._offset = 0  # clip index of self._buffer[0]
        self._buffer = np.zeros(0, dtype=np.float32)
        self._head = np.zeros(0, dtype=np.float32)  # the clip's first before + 1 samples (start reflection)

    @property
    def buffered(self) -> int:
        return int(self._buffer.shape[0])

    def push(self, samples: np.ndarray) -> Windows | None:
        """Add mono float32 samples; the windows that became ready (None: none did)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return None
        self._buffer = np.concatenate([self._buffer, samples])
        self.received += int(samples.size)
        if self._head.size <= self.spec.before:
            self._head = np.concatenate([self._head, samples])[: self.spec.before + 1]
        spec = self.spec
        ready = []
        while self.next_index * spec.hop_samples + spec.window_samples + spec.after <= self.received:
            ready.append(self.next_index)
            self.next_index += 1
        if not ready:
            return None
        windows = self._rows(ready, length=None)
        self._trim()
        return windows

    def finish(self) -> Windows | None:
        """The clip is complete: every window not yet cut (None: none left, or no audio at all)."""
        if self.received == 0:
            return None
        total = count_windows(self.received, self.spec)
        remaining = list(range(self.next_index, total))
        if not remaining:
            return None
        if self._offset == 0:  # the whole clip is still here: cut it as a whole file is cut
            whole = cut(self._buffer, self.spec)
            windows = Windows(
                samples=np.ascontiguousarray(whole.samples[remaining[0] :]),
                num_samples=whole.num_samples[remaining[0] :],
                start_s=whole.start_s[remaining[0] :],
                end_s=whole.end_s[remaining[0] :],
            )
        else:
            windows = self._rows(remaining, length=self.received)
        self.next_index = total
        return windows

    # -- rows ----------------------------------------------------------------------------------------
    def _clip(self, start: int, stop: int) -> np.ndarray:
        return self._buffer[start - self._offset : stop - self._offset]

    def _rows(self, indices: list[int], length: int | None) -> Windows:
        """Rows of windows `indices`; length: the clip's length once known (the end's padding), else
        every sample a row needs has arrived."""
        spec = self.spec
        reflect = spec.edge == "reflect"
        rows = np.zeros((len(indices), spec.input_samples), dtype=np.float32)  # (n, input_samples)
        known = self.received if length is None else length
        span_end = (count_windows(length, spec) - 1) * spec.hop_samples + spec.window_samples if length else 0
        for row, index in enumerate(indices):
            start = index * spec.hop_samples
            low, high = start - spec.before, start + spec.window_samples + spec.after
            inside_low, inside_high = max(low, 0), min(high, known)
            rows[row, inside_low - low : inside_high - low] = self._clip(inside_low, inside_high)
            if low < 0 and reflect:  # numpy's reflect padding of the clip's start: clip[-j] at j < 0
                rows[row, : -low] = self._head[1 : 1 - low][::-1]
            if length is not None and high > length:
                zero_tail = span_end > length and not (reflect and start + spec.window_samples < length)
                if reflect and not zero_tail:  # clip[2L - 2 - j] at j >= L
                    rows[row, length - low :] = self._clip(2 * length - 1 - high, length - 1)[::-1]
        starts = np.asarray(indices, dtype=np.int64) * spec.hop_samples  # (n,)
        num_samples = np.clip(known - starts, 0, spec.window_samples).astype(np.int64)
        start_s = starts / spec.sample_rate
        end_s = np.minimum((starts + spec.window_samples) / spec.sample_rate, known / spec.sample_rate)
        return Windows(samples=rows, num_samples=num_samples, start_s=start_s, end_s=end_s)

    def _trim(self) -> None:
        """Keep the samples the next windows (and the end's reflection) may need."""
        spec = self.spec
        keep_from = max(0, self.next_index * spec.hop_samples - spec.before - spec.after - 1)
        if keep_from > self._offset:
            self._buffer = self._buffer[keep_from - self._offset :].copy()
            self._offset = keep_from
