from __future__ import annotations

from portcullis.flow import Flow


class Stage:
    """A pipeline stage. Override the hooks you need; each must be fast and do no I/O."""

    name: str = "stage"

    def on_request(self, flow: Flow) -> None:
        """A client message on its way to the upstream. Answer with ``flow.answer`` to stop it."""

    def on_response(self, flow: Flow) -> None:
        """The final response of a flow (the upstream's or a stage's) on its way to the client."""

    def on_server_message(self, flow: Flow) -> None:
        """A server-initiated message (notification, server→client request) on its way to the client."""
