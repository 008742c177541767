"""What the endpoint needs from an upstream: a reply is a stream of messages ending with the final response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from portcullis.wire.jsonrpc import Message


class Reply(Protocol):
    """The upstream's answer to one forwarded message.

    ``status`` is the upstream's HTTP status (stdio: 200 for a request, 202 otherwise); ``streaming`` says whether
    the upstream chose an SSE stream; iterating yields each message in order (related notifications and
    server→client requests, then the final response). ``aclose`` releases the upstream side; for the stateless era
    closing before the end cancels the upstream call.
    """

    status: int
    streaming: bool
    session_id: str | None

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def aclose(self, cancel: bool = False) -> None: ...
