"""The circuit breaker's states: closed, open after N failures (answers at once), one probe after the cooldown,
closed again by the probe's success or opened again by its failure."""

from __future__ import annotations

import time

import pytest

from portcullis.errors import UpstreamError
from portcullis.upstream.breaker import Breaker


def test_open_probe_close() -> None:
    b = Breaker(threshold=2, cooldown=0.05)
    b.check("up")
    b.failed()
    b.check("up")  # one failure: still closed
    b.failed()
    with pytest.raises(UpstreamError, match="circuit open after 2 failures"):
        b.check("up")
    assert b.open_until > time.monotonic()
    b.open_until = time.monotonic()  # the cooldown is over
    b.check("up")  # the probe passes
    with pytest.raises(UpstreamError):
        b.check("up")  # but only one at a time
    b.failed()  # the probe failed: open again
    with pytest.raises(UpstreamError):
        b.check("up")
    b.open_until = 0.0
    b.check("up")
    b.ok()  # the probe succeeded: closed
    b.check("up")
    assert b.failures == 0
