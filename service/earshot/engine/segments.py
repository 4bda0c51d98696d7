"""Sound events over time: per-label segments from the window scores (threshold with hysteresis,
merging across short gaps, a minimum duration).

Each window speaks for its hop cell, [start, start + hop) (the last window: to the clip's end),
so overlapping windows give every instant one score, in time order, as frames do. Per label, a
segment opens at a cell whose score reaches `threshold`, stays open while scores stay at or above
`threshold - hysteresis`, and closes at the first cell below; segments of one label whose gap is
at most `merge_gap_s` become one; those shorter than `min_duration_s` are dropped. A segment's
score is the mean score of its cells. Segments never overlap for one label, never pass the clip's
end, and are sorted by start time (then by label).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SegmentConfig:
    threshold: float = 0.5  # a segment opens at this score
    hysteresis: float = 0.1  # and stays open down to threshold - hysteresis
    min_duration_s: float = 0.0  # shorter segments are dropped (after merging)
    merge_gap_s: float = 0.0  # segments of one label at most this far apart are merged
    label_thresholds: dict[str, float] = field(default_factory=dict)  # per-label opening thresholds

    def validate(self) -> list[str]:
        problems = []
        for name, value in (("threshold", self.threshold), *self.label_thresholds.items()):
            if not 0.0 <= value <= 1.0:
                problems.append(f"threshold {name}={value} must be within [0, 1]")
        if not 0.0 <= self.hysteresis <= 1.0:
            problems.append(f"hysteresis {self.hysteresis} must be within [0, 1]")
        if self.min_duration_s < 0 or self.merge_gap_s < 0:
            problems.append("min_duration_s and merge_gap_s must be >= 0")
        return problems


@dataclass(frozen=True)
class Segment:
    label: str
    start_s: float
    end_s: float
    score: float


def cells(start_s: np.ndarray, hop_s: float, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Each window's cell: (starts, ends) (n,), ends clipped to the clip's end."""
    ends = np.minimum(np.append(start_s[1:], np.inf), start_s + hop_s)
    ends[-1] = duration_s  # the last window speaks for the rest of the clip
    return start_s, np.minimum(ends, duration_s)


def find_segments(
    scores: np.ndarray,  # (n_windows, n_labels), per window
    labels: list[str],
    cell_starts: np.ndarray,  # (n_windows,)
    cell_ends: np.ndarray,  # (n_windows,)
    config: SegmentConfig,
) -> list[Segment]:
    found: list[Segment] = []
    for column, label in enumerate(labels):
        on = config.label_thresholds.get(label, config.threshold)
        off = max(0.0, on - config.hysteresis)
        column_scores = scores[:, column]
        if not (column_scores >= on).any():
            continue
        runs: list[list[int]] = []  # [first cell, last cell]
        open_at: int | None = None
        for index, score in enumerate(column_scores):
            if open_at is None:
                if score >= on:
                    open_at = index
            elif score < off:
                runs.append([open_at, index - 1])
                open_at = None
        if open_at is not None:
            runs.append([open_at, len(column_scores) - 1])
        merged: list[list[int]] = []
        for run in runs:
            if merged and cell_starts[run[0]] - cell_ends[merged[-1][1]] <= config.merge_gap_s:
                merged[-1][1] = run[1]
            else:
                merged.append(run)
        for first, last in merged:
            start, end = float(cell_starts[first]), float(cell_ends[last])
            if end - start + 1e-9 < config.min_duration_s or end <= start:
                continue
            found.append(Segment(label, start, end, float(column_scores[first : last + 1].mean())))
    return sorted(found, key=lambda s: (s.start_s, s.label))
