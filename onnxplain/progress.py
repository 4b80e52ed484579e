"""The one progress bar: on stderr, drawn only for runs long enough to need it."""
from __future__ import annotations

import sys
import time


class Progress:
    """A tiny progress bar on stderr.

    ``enabled``: True draws always, False never, None (auto) only when stderr is a terminal and the run
    has lasted ``delay`` seconds (short runs stay silent). The line shows the count, the rate (``unit``/s)
    and the time left; ``total=None``: the length is unknown, the bar shows the count and the rate.
    """

    def __init__(self, total: int | None, label: str, enabled=None, delay: float = 1.0, stream=None,
                 unit: str = ""):
        self.total = None if total is None else max(int(total), 1)
        self.label, self.done, self.unit = label, 0, unit
        self.stream = stream or sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
            self.delay = delay
        else:
            self.delay = 0.0
        self.enabled = bool(enabled)
        self.start = self._last = time.monotonic()
        self._drawn = False
        self._shown = 0  # the count last drawn

    def update(self, n: int = 1):
        self.done += int(n)
        if not self.enabled:
            return
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if now - self.start < self.delay or (now - self._last < 0.1 and not finished):
            return
        self._draw(now)

    def _draw(self, now: float):
        self._last, self._shown = now, self.done
        self.stream.write("\r" + self._line(now))
        self.stream.flush()
        self._drawn = True

    def _line(self, now: float) -> str:
        rate = f"{self.done / max(now - self.start, 1e-9):.1f} {self.unit + '/s' if self.unit else '/s'}"
        if self.total is None:  # unknown length: count and rate
            return f"{self.label} {self.done} done, {rate}"
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        eta = (now - self.start) * (1 - frac) / frac if frac > 0 else 0.0
        return f"{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%} {rate} eta {eta:4.0f}s"

    def close(self):
        now = time.monotonic()
        if self.enabled and self.done != self._shown and now - self.start >= self.delay:
            self._draw(now)  # the final count (throttled away, or never reached a known end)
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
