"""Progress of a catalog job: a bar on a terminal, plain periodic log lines otherwise, a summary."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("earshot.embed")

LOG_EVERY_S = 10.0


@dataclass
class Summary:
    files: int = 0  # rows written this run
    failed: int = 0
    skipped: int = 0  # already done (--resume)
    not_audio: list[str] = field(default_factory=list)  # in folders, skipped for their extension
    audio_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None  # from the start until the engine was loaded, self-tested and warm

    @property
    def wall_seconds(self) -> float:
        return time.monotonic() - self.started

    def not_audio_line(self, shown: int = 5) -> str | None:
        """What was skipped in folders for its extension, or None when nothing was."""
        if not self.not_audio:
            return None
        extensions = sorted({Path(path).suffix.lower() or "(none)" for path in self.not_audio})
        more = len(self.not_audio) - shown
        names = ", ".join(self.not_audio[:shown]) + (f", ... ({more} more)" if more > 0 else "")
        return (
            f"skipped {len(self.not_audio)} file(s) in folders whose extension is not audio "
            f"({', '.join(extensions)}): {names}; name a file directly or in a manifest to have it tried"
        )

    def line(self) -> str:
        wall = max(self.wall_seconds, 1e-9)
        return (
            f"{self.files} files ({self.failed} failed, {self.skipped} skipped as done, "
            f"{len(self.not_audio)} skipped as not audio), "
            f"{self.audio_seconds / 3600:.3f} audio hours in {wall:.1f} s"
            + (f" (engine ready after {self.ready_seconds:.1f} s)" if self.ready_seconds is not None else "")
            + ": "
            f"{self.files / wall:.1f} files/s, {self.audio_seconds / 3600 / wall:.4f} audio-hours/s"
        )


class Progress:
    """Counts files as they finish; draws a tqdm bar when stderr is a terminal, logs otherwise."""

    def __init__(self, total: int, summary: Summary, interactive: bool | None = None):
        self.total = total
        self.summary = summary
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar = None
        self.last_log = time.monotonic()
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", dynamic_ncols=True, smoothing=0.1)

    def advance(self, duration_s: float | None, failed: bool) -> None:
        self.summary.files += 1
        self.summary.failed += int(failed)
        self.summary.audio_seconds += duration_s or 0.0
        if self.bar is not None:
            hours_per_s = self.summary.audio_seconds / 3600 / max(self.summary.wall_seconds, 1e-9)
            self.bar.set_postfix(failed=self.summary.failed, audio_h_per_s=f"{hours_per_s:.4f}", refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.monotonic()
            done = self.summary.files
            rate = done / max(self.summary.wall_seconds, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            log.info("%d/%d files, %s; ETA %.0f s", done, self.total, self.summary.line(), eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.info("done: %s", self.summary.line())
