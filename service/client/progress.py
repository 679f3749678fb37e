"""Batch progress: files, audio hours, ETA and real-time factor (tqdm on a terminal, else log lines)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_EVERY_S = 10.0  # without a terminal (a Job's log): one line this often


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts finished files and their audio; ETA is by audio still to do, at the speed so far."""

    def __init__(self, total_files: int, total_audio_s: float, out: TextIO | None = None, enabled: bool = True) -> None:
        self.total_files, self.total_audio_s = total_files, total_audio_s
        self.files = self.failed = 0
        self.audio_s = 0.0
        self._out, self._enabled = out or sys.stderr, enabled
        self._started = self._logged = time.monotonic()
        self._bar = self._make_bar() if enabled and self._out.isatty() else None

    def _make_bar(self):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=max(self.total_audio_s, 1e-9), file=self._out, dynamic_ncols=True, leave=True,
                    bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]{postfix}",
                    desc=self._files_text())

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self._started

    @property
    def rtf(self) -> float:
        """Wall seconds per second of audio (below 1: faster than real time)."""
        return self.wall_s / self.audio_s if self.audio_s else 0.0

    def _files_text(self) -> str:
        failed = f" ({self.failed} failed)" if self.failed else ""
        return f"files {self.files}/{self.total_files}{failed}"

    def _audio_text(self) -> str:
        return f"audio {self.audio_s / 3600:.3f}/{self.total_audio_s / 3600:.3f} h, RTF {self.rtf:.3f}"

    def advance(self, audio_s: float, failed: bool = False) -> None:
        """One file finished; audio_s of a failed file counts toward the ETA, not the audio done."""
        self.files += 1
        self.failed += failed
        if not failed:
            self.audio_s += audio_s
        if self._bar is not None:
            self._bar.set_description_str(self._files_text(), refresh=False)
            self._bar.set_postfix_str(self._audio_text(), refresh=False)
            self._bar.update(audio_s)
        elif self._enabled and (time.monotonic() - self._logged >= LOG_EVERY_S or self.files == self.total_files):
            self._logged = time.monotonic()
            left = self.total_audio_s - self.audio_s
            eta = f", ETA {_clock(left * self.rtf)}" if self.audio_s else ""
            self._out.write(f"batch: {self._files_text()}, {self._audio_text()}{eta}\n")
            self._out.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
