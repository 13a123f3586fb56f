"""Telemetry batches the server could not take yet, kept on disk until it can.

One file per batch, holding exactly the gzip request body, so a replay sends the file's
bytes as they are. Names are `<ns>-<samples>.json.gz`: they sort oldest first and say
how many samples a file holds without opening it. A file is written to a temporary
name, fsynced and renamed, then the directory is fsynced: after a crash or power loss a
batch is either all there or not there, never half a file that would be replayed as
garbage.

The spool is bounded in bytes. A new batch that does not fit pushes the OLDEST batches
out (and they are counted and logged): after a long outage the recent past is what an
operator looks at, and it is what the server's retention keeps longest.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
SUFFIX = ".json.gz"
_TEMP_PREFIX = ".tmp-"
_NAME_RE = re.compile(r"^(\d{20})-(\d+)\.json\.gz$")


class Spool:
    """A directory of batches, at most `max_bytes` in all; safe to share between threads.

    The directory is created (mode 0700: samples name sessions and processes) on the first
    write. Temporary files left by a process that died mid-write are removed on start.
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.directory = Path(directory).expanduser()
        self.max_bytes = max_bytes
        self.dropped_batches = 0
        self.dropped_samples = 0
        self._lock = threading.Lock()
        self._last_ns = 0
        with self._lock:
            for path in self._entries(include_temp=True):
                if path.name.startswith(_TEMP_PREFIX):
                    _unlink(path)
                else:
                    self._last_ns = max(self._last_ns, int(_NAME_RE.match(path.name).group(1)))  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.files())

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, max_bytes={self.max_bytes})"

    @property
    def size_bytes(self) -> int:
        """Bytes the spooled batches take."""
        return sum(size for _, size in self._sized())

    def files(self) -> list[Path]:
        """Spooled batches, oldest first."""
        with self._lock:
            return self._entries()

    @staticmethod
    def samples_in(path: Path) -> int:
        """How many samples a spool file holds (from its name)."""
        match = _NAME_RE.match(path.name)
        return int(match.group(2)) if match else 0

    def put(self, payload: bytes, samples: int) -> Path | None:
        """Keep one encoded batch of `samples` samples; returns its file, or None if it was dropped.

        Makes room first by dropping the oldest batches; a batch larger than the whole
        bound is dropped itself (it could never be kept without dropping everything).
        """
        with self._lock:
            if len(payload) > self.max_bytes:
                self._count_dropped(1, samples, "it alone is larger than the spool's bound")
                return None
            sized = self._sized_unlocked()
            total = sum(size for _, size in sized) + len(payload)
            dropped_batches = dropped_samples = 0
            for path, size in sized:
                if total <= self.max_bytes:
                    break
                if _unlink(path):
                    dropped_batches += 1
                    dropped_samples += self.samples_in(path)
                total -= size
            if dropped_batches:
                self._count_dropped(dropped_batches, dropped_samples, "the spool is full (oldest dropped first)")
            # Nanoseconds keep names unique and ordered; never behind the newest file, even
            # if the clock stepped back since it was written.
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            path = self.directory / f"{self._last_ns:020d}-{samples}{SUFFIX}"
            _write_atomically(path, payload)
            return path

    def read(self, path: Path) -> bytes:
        """The batch in `path` (FileNotFoundError if it was dropped meanwhile)."""
        return path.read_bytes()

    def remove(self, path: Path) -> None:
        """Forget a batch that was delivered (or that the server refused for good)."""
        with self._lock:
            _unlink(path)

    # --- internals -------------------------------------------------------------------

    def _entries(self, include_temp: bool = False) -> list[Path]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        keep = [n for n in names if _NAME_RE.match(n) or (include_temp and n.startswith(_TEMP_PREFIX))]
        return [self.directory / name for name in sorted(keep)]

    def _sized(self) -> list[tuple[Path, int]]:
        with self._lock:
            return self._sized_unlocked()

    def _sized_unlocked(self) -> list[tuple[Path, int]]:
        sized = []
        for path in self._entries():
            try:
                sized.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue
        return sized

    def _count_dropped(self, batches: int, samples: int, why: str) -> None:
        self.dropped_batches += batches
        self.dropped_samples += samples
        log.warning("Telemetry spool %s: dropped %d batch(es), %d sample(s), because %s (%d samples dropped so far)",
                    self.directory, batches, samples, why, self.dropped_samples)


def _write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(_TEMP_PREFIX + path.name)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        _unlink(temp)
        raise
    # The rename is durable only once the directory entry is on disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
