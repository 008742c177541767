from __future__ import annotations

import os

import pytest

from tests.support.conformance import missing_node_modules


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_node_modules()
    if not missing:
        return
    if os.environ.get("CI") or os.environ.get("PORTCULLIS_REQUIRE_NODE"):
        raise pytest.UsageError(f"node_modules missing in CI: {missing}")
    skip = pytest.mark.skip(reason=f"node_modules missing ({missing}); run `make setup` (or npm ci)")
    for item in items:
        if "node" in item.keywords:
            item.add_marker(skip)
