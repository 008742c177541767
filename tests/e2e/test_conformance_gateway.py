"""The official conformance suite through the gateway: not one check's verdict may differ from direct.

Both runs happen in the same test against the same fixture process, for both requirement sets. Scored and
not-scored scenarios are compared alike: the gateway must be invisible to the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.conformance import REQUIREMENT_SETS, fixture_server_argv, run_conformance
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.procs import ManagedProcess, running_process

pytestmark = [pytest.mark.e2e, pytest.mark.node]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "conformance-gateway"


@pytest.fixture(scope="module")
def fixture_server() -> Iterator[ManagedProcess]:
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as proc:
        yield proc


@pytest.fixture(scope="module")
def gateway(fixture_server: ManagedProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw"), {"fixture": {"url": fixture_server.ready_value}}) as gw:
        yield gw


@pytest.mark.parametrize("requirements", REQUIREMENT_SETS)
def test_gateway_changes_no_verdict(fixture_server: ManagedProcess, gateway: RunningGateway, requirements: str) -> None:
    direct = run_conformance(fixture_server.ready_value, requirements, ARTIFACTS / requirements / "direct", timeout=240)
    through = run_conformance(gateway.url("fixture"), requirements, ARTIFACTS / requirements / "gateway", timeout=240)

    assert gateway.proc.is_running(), gateway.proc.output()
    assert direct.verdicts, f"the direct run produced no verdicts\n{direct.log[-3000:]}"
    differ = {
        k: (direct.verdicts.get(k), through.verdicts.get(k))
        for k in direct.verdicts.keys() | through.verdicts.keys()
        if direct.verdicts.get(k) != through.verdicts.get(k)
    }
    assert not differ, (
        f"{requirements}: verdicts differ (direct, gateway):\n"
        + "\n".join(f"  {k}: {v}" for k, v in sorted(differ.items()))
        + "\n"
        + through.describe(sorted(differ))
    )
    assert through.exit_code == direct.exit_code == 0
