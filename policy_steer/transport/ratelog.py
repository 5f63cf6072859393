"""Logging that a flood of bad messages cannot turn into a flood of log lines.

:class:`RateLimitedLog` writes at most one record per *kind* (an error code, an exception type) per
interval; the next record of that kind says how many were left out meanwhile, and :meth:`flush`
writes those counts for kinds that went quiet. A traceback is attached the first time a kind is seen
in the process only: a bug shows its stack once, not once per message that triggers it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval_s = float(interval_s)
        self.clock = clock
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}
        self._traced: set[str] = set()
        self._lock = threading.Lock()

    def log(self, kind: str, level: int, message: str, exc_info: bool = False) -> bool:
        """Log ``message`` unless ``kind`` was logged less than ``interval_s`` ago (then count it). True if written."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._left_out[kind] = self._left_out.get(kind, 0) + 1
                return False
            self._last[kind] = now
            left_out = self._left_out.pop(kind, 0)
            trace = bool(exc_info) and kind not in self._traced
            if trace:
                self._traced.add(kind)
        if left_out:
            message += f" (and {left_out} more of this kind in the previous {self.interval_s:g} s)"
        self.logger.log(level, "%s", message, exc_info=trace)
        return True

    def flush(self, force: bool = False) -> None:
        """One line per kind whose left-out count is due (its interval passed; all of them with ``force``)."""
        now = self.clock()
        due: list[tuple[str, int]] = []
        with self._lock:
            for kind, n in list(self._left_out.items()):
                if force or now - self._last.get(kind, 0.0) >= self.interval_s:
                    due.append((kind, n))
                    del self._left_out[kind]
                    self._last[kind] = now
        for kind, n in due:
            self.logger.warning("%d more %s in the previous %g s (logged once per %g s)", n, kind, self.interval_s, self.interval_s)
