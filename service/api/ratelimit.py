"""Failed credentials per client network: past ``max_failures`` within ``window_s``, every further
attempt from that network is refused with a 429 and Retry-After until the oldest failure ages out.
Password logins have a second bound, ``max_total`` failures from everywhere together.

A network is what one attacker commonly holds: an IPv4 /24, an IPv6 /64 (one home or one server
gets a whole /64), and all of loopback. Counting by exact address would let a host that binds 12
addresses, or walks its /64, guess 12 or 2^64 times as often. The total bound is what stays when the
attacker holds many networks (or fills the table, which forgets the least recently seen first): it
can keep the page's login locked while it lasts, but not let guesses through, and the bearer token,
192 random bits that no rate of guessing reaches, is not held by it.

A login counts as a failure from the moment it is tried, so that a burst of concurrent guesses
cannot all get past the count before the first one is judged; one that succeeds takes back only its
own count, so a success between guesses buys no more of them. Logins and bearer tokens share the
per-network count, as both are guesses at a secret. Only the event loop touches it.

Addresses are the client's as uvicorn gives it: the connection's peer, or X-Forwarded-For when that
peer is a proxy on this machine (uvicorn trusts the header from 127.0.0.1 and ::1 only, as any
client could set it). A proxy elsewhere makes all of its clients one network, with one count.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque

# Networks remembered at once; the least recently seen is forgotten first.
MAX_NETWORKS = 4096


def network_of(address: str) -> str:
    """The network an address is counted in: an IPv4 /24, an IPv6 /64, or loopback as a whole."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a Unix socket's peer): counted by itself
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class FailureLimiter:
    def __init__(self, max_failures: int, window_s: float, max_total: int) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_total = max_total
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._logins: deque[float] = deque()

    def _age(self, times: deque[float], now: float) -> deque[float]:
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def _recent(self, network: str, now: float) -> deque[float]:
        times = self._failures.get(network)
        if times is None:
            times = deque()
            self._failures[network] = times
            while len(self._failures) > MAX_NETWORKS:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(network)
        return self._age(times, now)

    def _wait(self, times: deque[float], limit: int, now: float) -> int | None:
        return None if len(times) < limit else max(1, math.ceil(times[0] + self.window_s - now))

    def retry_after(self, address: str, *, login: bool = False) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it may now."""
        now = time.monotonic()
        waits = [self._wait(self._recent(network_of(address), now), self.max_failures, now)]
        if login:
            waits.append(self._wait(self._age(self._logins, now), self.max_total, now))
        found = [w for w in waits if w is not None]
        return max(found) if found else None

    def fail(self, address: str, *, login: bool = False) -> None:
        now = time.monotonic()
        self._recent(network_of(address), now).append(now)
        if login:
            self._logins.append(now)

    def take_back(self, address: str) -> None:
        """A login counted as a failure when it was tried turned out right: that one count goes."""
        times = self._failures.get(network_of(address))
        if times:
            times.pop()
        if self._logins:
            self._logins.pop()
