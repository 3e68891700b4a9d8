"""The progress line on stderr: rows done, rows/s, ETA. Shown only when stderr is a terminal and
not --quiet (a log file or a pipe gets nothing but the final summary, as users expect)."""
from __future__ import annotations

import sys
import threading
import time


def estimate_rows(paths, fmt_of) -> int | None:
    """A quick estimate of the data rows (line count; header lines off; Parquet metadata), for the
    ETA. None when some file cannot be estimated cheaply (compressed)."""
    total = 0
    for p in paths:
        fmt = fmt_of(p)
        if fmt == "parquet":
            try:
                import pyarrow.parquet as pq
                total += pq.ParquetFile(p).metadata.num_rows
            except Exception:                 # noqa: BLE001  (only an estimate)
                return None
            continue
        if str(p).lower().endswith(".gz"):
            return None
        n, last = 0, b"\n"
        with open(p, "rb") as f:
            while buf := f.read(1 << 22):
                n += buf.count(b"\n")
                last = buf[-1:]
        n += last != b"\n"
        total += n - (fmt in ("csv", "tsv"))
    return total


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int | None, enabled: bool, stream=None, every: float = 0.25):
        self.stream = stream or sys.stderr
        self.enabled, self.total, self.every = enabled, total, every
        self.done, self.skipped = 0, 0
        self.t0 = self.last = time.monotonic()
        self.lock = threading.Lock()

    def skip(self, n: int) -> None:
        """Rows already done by an earlier run (--resume): count toward the total, not the rate."""
        with self.lock:
            self.skipped += n

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if self.enabled and now - self.last >= self.every:
                self.last = now
                self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        dt = max(now - self.t0, 1e-9)
        rate = self.done / dt
        rows = self.done + self.skipped
        text = f"\rscore: {rows:,} rows"
        if self.total:
            frac = min(rows / self.total, 1.0)
            text += f" / ~{self.total:,} ({frac:.0%})"
        text += f"  {rate:,.0f} rows/s"
        if self.total and rate > 0:
            text += f"  ETA {_duration(max(self.total - rows, 0) / rate)}"
        self.stream.write(text + "   " + end)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            with self.lock:
                self._draw(time.monotonic(), end="\n")
