"""Failed credentials per client address: past ``max_failures`` within ``window_s``, every further
attempt from that address is refused with a 429 and Retry-After until the oldest failure ages out.

A login counts as a failure from the moment it is tried, so that a burst of concurrent guesses
cannot all get past the count before the first one is judged; one that succeeds clears its address. Logins
and bearer tokens share the count, as both are guesses at a secret. Only the event loop touches it.

Addresses are the client's as uvicorn gives it: the connection's peer, or X-Forwarded-For when that
peer is a proxy on this machine (uvicorn trusts the header from 127.0.0.1 and ::1 only, as any
client could set it). A proxy elsewhere makes all of its clients one address, with one count.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque

# Addresses remembered at once; the least recently seen is forgotten first.
MAX_ADDRESSES = 4096


class FailureLimiter:
    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            times = deque()
            self._failures[address] = times
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it may now."""
        now = time.monotonic()
        times = self._recent(address, now)
        if len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now))

    def fail(self, address: str) -> None:
        now = time.monotonic()
        self._recent(address, now).append(now)

    def take_back(self, address: str) -> None:
        """A login counted as a failure when it was tried turned out right: the address starts afresh."""
        self._failures.pop(address, None)
