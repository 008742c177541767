"""Read what the gateway recorded, straight from its store."""

from __future__ import annotations

from typing import Any

from portcullis.store.db import make_engine
from portcullis.store.queries import all_records


def load_records(store: str) -> list[dict[str, Any]]:
    engine = make_engine(store)
    try:
        return all_records(engine)
    finally:
        engine.dispose()
