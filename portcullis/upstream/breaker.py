"""A circuit breaker per HTTP upstream: after ``threshold`` consecutive failures to reach it (connection refused,
reset, timed out) the gateway stops trying for ``cooldown`` seconds and answers at once (``-32001``, "circuit
open"); then one request is let through as a probe — its success closes the circuit, its failure opens it again.
A dead upstream is not hammered, and callers learn in microseconds rather than after a connect timeout each.
Answers from the upstream, errors included, count as success: only failures to reach it open the circuit.
"""

from __future__ import annotations

import time

from portcullis import errors


class Breaker:
    __slots__ = ("cooldown", "failures", "open_until", "probing", "threshold")

    def __init__(self, threshold: int = 5, cooldown: float = 5.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    @property
    def state(self) -> str:
        """``closed`` (calls go through), ``open`` (refused at once) or ``half-open`` (one probe is out)."""
        if self.failures < self.threshold:
            return "closed"
        return "half-open" if self.probing else "open"

    def check(self, name: str) -> None:
        """Before a request: raises UpstreamError while the circuit is open (one probe passes after cooldown)."""
        if self.failures < self.threshold:
            return
        now = time.monotonic()
        if now < self.open_until or self.probing:
            wait = max(0.0, self.open_until - now)
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {name!r} is unreachable (circuit open after {self.failures} failures; next try in "
                f"{wait:.1f} s)",
            )
        self.probing = True  # this request is the probe

    def ok(self) -> None:
        self.failures = 0
        self.probing = False

    def failed(self) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown
