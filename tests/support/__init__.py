"""Shared helpers for Portcullis tests (process management, the MCP conformance suite)."""

from tests.support.procs import (
    ManagedProcess,
    ProcessStartError,
    async_running_process,
    running_process,
    start_process,
)

__all__ = [
    "ManagedProcess",
    "ProcessStartError",
    "async_running_process",
    "running_process",
    "start_process",
]
