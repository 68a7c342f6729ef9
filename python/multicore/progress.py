"""Progress display for maps: tqdm when it is installed, else a small line
on stderr with done/total, rate and ETA.

Quiet when stderr is not a terminal, unless asked with progress="always"
(a log file then gets one line per update interval rather than nothing).
"""

import sys
import time

_INTERVAL = 0.1  # seconds between redraws of the built-in line


def make_progress(progress, total, desc="multicore"):
    """The progress object for a map: progress is False/None (none), True
    (only on a terminal), "always", or an object with update(n)/close()."""
    if not progress:
        return _Quiet()
    if hasattr(progress, "update") and hasattr(progress, "close"):
        return progress
    if progress not in (True, "always"):
        raise ValueError(f"progress must be True, False, 'always' or a "
                         f"tqdm-like object, not {progress!r}")
    stream = sys.stderr
    if progress is True and not (hasattr(stream, "isatty") and stream.isatty()):
        return _Quiet()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Line(total, desc, stream)
    return tqdm(total=total, desc=desc, file=stream, disable=False)


class _Quiet:
    def update(self, n=1):
        pass

    def close(self):
        pass


class _Line:
    """`desc: 120/1000 12% 341.2 it/s ETA 0:00:02` redrawn in place."""

    def __init__(self, total, desc, stream):
        self.total, self.desc, self.stream = total, desc, stream
        self.done = 0
        self.start = self.last = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, n=1):
        self.done += n
        now = time.monotonic()
        if now - self.last >= _INTERVAL:
            self.last = now
            self._draw(now, final=False)

    def close(self):
        self._draw(time.monotonic(), final=True)

    def _draw(self, now, final):
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            pct = 100.0 * self.done / self.total
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            text = (f"{self.desc}: {self.done}/{self.total} {pct:3.0f}% "
                    f"{rate:.1f} it/s ETA {_clock(left)}")
        else:
            text = f"{self.desc}: {self.done} {rate:.1f} it/s {_clock(elapsed)}"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + text + end)
        self.stream.flush()


def _clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
