"""The official conformance suite through the gateway, and through gateway → agent: not one check's verdict may
differ from direct.

The runs happen in the same test against the same fixture process, for both requirement sets. Scored and
not-scored scenarios are compared alike: the gateway (and the agent's tunnel) must be invisible to the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import connected, create_token, start_agent
from tests.support.conformance import REQUIREMENT_SETS, ConformanceRun, fixture_server_argv, run_conformance
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.procs import ManagedProcess, running_process
from tests.support.waiting import wait_until

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


@pytest.fixture(scope="module")
def agent_gateway(fixture_server: ManagedProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway that reaches the fixture only through a connected `portcullis agent`."""
    where = tmp_path_factory.mktemp("gw-agent")
    with running_gateway(where, {"fixture": {"via": "agent"}}) as gw:
        token = create_token(gw.config_path, "conformance", ["fixture"])
        agent = start_agent(where, gw.base, {"fixture": {"url": fixture_server.ready_value}}, token)
        try:
            wait_until(lambda: connected(gw.store, "conformance"), 30, "the agent to connect")
            yield gw
        finally:
            agent.stop(timeout=10)


def _differences(direct: ConformanceRun, other: ConformanceRun, label: str, requirements: str) -> str:
    differ = {
        k: (direct.verdicts.get(k), other.verdicts.get(k))
        for k in direct.verdicts.keys() | other.verdicts.keys()
        if direct.verdicts.get(k) != other.verdicts.get(k)
    }
    if not differ:
        return ""
    return (
        f"{requirements}: verdicts differ (direct, {label}):\n"
        + "\n".join(f"  {k}: {v}" for k, v in sorted(differ.items()))
        + "\n"
        + other.describe(sorted(differ))
    )


@pytest.mark.parametrize("requirements", REQUIREMENT_SETS)
def test_gateway_and_agent_change_no_verdict(
    fixture_server: ManagedProcess, gateway: RunningGateway, agent_gateway: RunningGateway, requirements: str
) -> None:
    direct = run_conformance(fixture_server.ready_value, requirements, ARTIFACTS / requirements / "direct", timeout=240)
    through = run_conformance(gateway.url("fixture"), requirements, ARTIFACTS / requirements / "gateway", timeout=240)
    tunnel = run_conformance(
        agent_gateway.url("fixture"), requirements, ARTIFACTS / requirements / "agent", timeout=240
    )

    assert gateway.proc.is_running(), gateway.proc.output()
    assert agent_gateway.proc.is_running(), agent_gateway.proc.output()
    assert direct.verdicts, f"the direct run produced no verdicts\n{direct.log[-3000:]}"
    problems = _differences(direct, through, "gateway", requirements) + _differences(
        direct, tunnel, "gateway → agent", requirements
    )
    assert not problems, problems
    assert through.exit_code == direct.exit_code == tunnel.exit_code == 0
