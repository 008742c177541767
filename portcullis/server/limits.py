"""Rate limits and concurrency caps at the edge, per principal and per server (``limits.rate``).

Token buckets: a principal (its caller key: issuer and subject, or the API key) and a server each earn
``per_second`` tokens up to ``burst``; every JSON-RPC request costs one. ``concurrent`` caps the requests of one
principal (or to one server) in flight at once — a held call waiting for its approval, or a stream being relayed,
counts. Over a limit the request is refused before anything else happens: HTTP 429 with ``Retry-After`` and a
JSON-RPC error (``-32013``, ``data.retry_after`` in seconds) naming which limit, recorded as ``rejected``.

The buckets live in this process (each replica limits what it serves: with N replicas behind a balancer the
effective limit is up to N times the configured one). Memory is bounded: the least recently seen keys are dropped.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from portcullis import errors
from portcullis.config.model import RateConfig, RateLimit

MAX_KEYS = 100_000
RATE_LIMITED = -32013


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    inflight: int = 0


class Limited(errors.ProtocolError):
    def __init__(self, what: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            429,
            RATE_LIMITED,
            f"Too Many Requests: the {what} limit is reached; retry after {seconds} s",
            data={"retry_after": seconds, "limit": what},
        )
        self.retry_after = seconds


class Limits:
    def __init__(self, cfg: RateConfig | None) -> None:
        self.cfg = cfg
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.cfg is not None

    def _bucket(self, kind: str, key: str, lim: RateLimit, now: float) -> _Bucket:
        k = (kind, key)
        b = self._buckets.get(k)
        if b is None:
            b = self._buckets[k] = _Bucket(float(lim.burst), now)
            while len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(k)
            b.tokens = min(float(lim.burst), b.tokens + (now - b.at) * lim.per_second)
            b.at = now
        return b

    def admit(self, principal: str, server: str, n: int) -> Callable[[], None]:
        """Take ``n`` requests for ``principal`` on ``server``; raises :class:`Limited`. Returns the release."""
        assert self.cfg is not None
        now = time.monotonic()
        taken: list[_Bucket] = []
        for kind, key, lim in (("principal", principal, self.cfg.principal), ("server", server, self.cfg.server)):
            if lim is None:
                continue
            b = self._bucket(kind, key, lim, now)
            if lim.concurrent is not None and b.inflight + n > lim.concurrent:
                raise Limited(f"{kind} concurrency ({lim.concurrent} at once)", 1.0)
            if b.tokens < n:
                raise Limited(f"{kind} rate ({lim.per_second:g}/s)", (n - b.tokens) / lim.per_second)
            taken.append(b)
        for b in taken:
            b.tokens -= n
            b.inflight += n

        def release() -> None:
            for b in taken:
                b.inflight -= n

        return release
