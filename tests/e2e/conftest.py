"""Peers that many end-to-end modules start: one per module (module scope), torn down with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.conformance import fixture_server_argv
from tests.support.oidc import OidcProvider, running_oidc_provider
from tests.support.procs import ManagedProcess, running_process


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A real OpenID provider (oidc-provider) with users in groups; see tests/support/oidc.py."""
    with running_oidc_provider(tmp_path_factory.mktemp("op")) as provider:
        yield provider


@pytest.fixture(scope="module")
def fixture() -> Iterator[ManagedProcess]:
    """The conformance fixture (Python SDK, both eras) on a free loopback port."""
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as p:
        yield p
