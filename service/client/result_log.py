"""An append-only JSON Lines result file that survives kills: the resume state of `stt-client batch`.

Each record is one complete line written with a single write() on an O_APPEND descriptor,
then fsync'ed, under a lock: a reader (or a rerun) sees whole lines only, except for a
torn last line when the process died inside write(). Opening the file repairs that: the
torn tail is cut off, and the files it names are done again.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class ResultLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.records: list[dict] = []  # complete records already in the file, in order
        self.repaired_bytes = 0  # size of the torn tail cut off on open
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load_and_repair()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load_and_repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # after the last newline: empty, or a line cut short by a kill
        good_end = len(data) - len(torn)
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and "file" in record:
                self.records.append(record)
            elif line.strip():  # not ours to delete: leave it, but it names no finished file
                log.warning("%s:%d is not a result record; ignored", self.path, number)
        if good_end < len(data):
            self.repaired_bytes = len(data) - good_end
            log.warning("cut %d bytes of incomplete record from %s", self.repaired_bytes, self.path)
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    def done(self) -> set[str]:
        return {r["file"] for r in self.records}

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock:
            written = os.write(self._fd, line)
            while written < len(line):  # short writes do not happen on regular files, but be exact
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
            self.records.append(record)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> "ResultLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
