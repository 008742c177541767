"""Webhook notifications about approval requests: generic JSON, or a Slack incoming-webhook message.

A notification carries only an allow-list of a request's fields (never the arguments, only their digest; never the
requester's key, the session or the votes) and a link to where the request can be seen and decided.

Delivery is in the background: :meth:`Notifier.notify` builds the message at once and returns; each target gets its
own delivery task, which POSTs the message and retries connection errors, timeouts and HTTP 408/429/5xx with
exponential backoff (a numeric ``Retry-After`` is honoured up to ``backoff_max``). Other 4xx and any 3xx are final:
redirects are never followed. The outcome of every delivery (delivered, given up, dropped) goes to ``on_result``.

Webhook URLs are secrets (a Slack webhook URL is its own credential): logs and ``on_result`` name a target by its
origin only (``scheme://host:port``), and never show a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from yarl import URL

from portcullis.tasks import spawn
from portcullis.upstream.netguard import GuardedResolver, current_guard

log = logging.getLogger("portcullis.approvals")

EVENTS = ("requested", "approved", "denied", "expired", "released")
FORMATS = ("json", "slack")
RETRY_STATUSES = frozenset({408, 429})
_TIMES = "\N{MULTIPLICATION SIGN}"  # as in "HTTP 500 <times>5"

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks#section)
_SLACK_TEXT_MAX = 3000
_SLACK_FIELD_MAX = 2000
_SLACK_FIELDS_MAX = 10


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: how logs and results name a target (path, query and userinfo are secrets)."""
    try:
        u = URL(url)
        host = u.host or "?"
    except (ValueError, TypeError):
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{u.scheme}://{host}:{u.port}" if u.port is not None else f"{u.scheme}://{host}"


@dataclass(frozen=True, slots=True, repr=False)
class WebhookTarget:
    url: str
    format: str  # "json" (generic) or "slack" (Slack incoming-webhook compatible)
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. an auth header the operator configured

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"webhook format must be one of {FORMATS}, not {self.format!r}")
        try:
            u = URL(self.url)
        except (ValueError, TypeError):
            raise ValueError("webhook url is not a valid URL") from None
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError(f"webhook url must be an absolute http(s) URL (got {origin(self.url)})")

    @property
    def origin(self) -> str:
        return origin(self.url)

    def __repr__(self) -> str:  # the URL and the headers are secrets
        return f"WebhookTarget({self.origin!r}, format={self.format!r})"


# --- the message -----------------------------------------------------------------------------------------------


def _iso(ns: Any) -> str | None:
    if not isinstance(ns, int) or isinstance(ns, bool):
        return None
    try:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _fields(approval: Mapping[str, Any]) -> dict[str, Any]:
    """The allow-list: everything a notification may say about a request (each value coerced to a plain type)."""
    groups = approval.get("approvers")
    required = approval.get("required")
    return {
        "id": _str(approval.get("id")),
        "state": _str(approval.get("state")),
        "server": _str(approval.get("server")),
        "method": _str(approval.get("method")),
        "target": _str(approval.get("target")),
        "requester": _str(approval.get("requester")),
        "rule": _str(approval.get("rule")),
        "policy_version": _str(approval.get("policy_version")),
        "approvers": [str(g) for g in groups] if isinstance(groups, list | tuple) else [],
        "required": required if isinstance(required, int) and not isinstance(required, bool) else None,
        "args_digest": _str(approval.get("args_digest")),
        "created": _iso(approval.get("created_ns")),
        "expires": _iso(approval.get("expires_ns")),
        "decided_by": _str(approval.get("decided_by")),
        "reason": _str(approval.get("reason")),
    }


def _esc(text: str) -> str:
    """Slack mrkdwn escaping: ``<``, ``>`` and ``&`` (so a value can't make a link or a @channel mention)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack(event: str, a: dict[str, Any], status_url: str) -> dict[str, Any]:
    link_url = _esc(status_url).replace("|", "%7C")
    link = f"<{link_url}|{_esc(a['id'] or '?')}>"
    what = a["target"] or a["method"] or "?"
    summary = f"Approval {event}: {a['requester'] or '?'} → {a['server'] or '?'} {what}"
    if event in ("approved", "denied") and a["decided_by"]:
        summary += f" (by {a['decided_by']})"
    text = f"{_cut(_esc(summary), 2500)} — {link}"

    def fld(label: str, value: str | None, code: bool = False) -> dict[str, str]:
        shown = _esc(value) if value else "—"
        if code and value:
            shown = f"`{shown}`"
        return {"type": "mrkdwn", "text": _cut(f"*{label}*\n{shown}", _SLACK_FIELD_MAX)}

    needed = f" ({a['required']} needed)" if a["required"] is not None else ""
    rule = a["rule"] + (f" @ {a['policy_version']}" if a["policy_version"] else "") if a["rule"] else None
    fields = [
        fld("Requester", a["requester"]),
        fld("Server", a["server"]),
        fld("Call", f"{a['method']} {a['target']}" if a["target"] else a["method"]),
        fld("State", a["state"]),
        fld("Rule", rule),
        fld("Approvers", ", ".join(a["approvers"]) + needed if a["approvers"] else None),
        fld("Expires", a["expires"]),
        fld("Arguments digest", a["args_digest"], code=True),
    ]
    if a["decided_by"]:
        fields.append(fld("Decided by", a["decided_by"]))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, _SLACK_TEXT_MAX)}},
        {"type": "section", "fields": fields[:_SLACK_FIELDS_MAX]},
    ]
    if a["reason"]:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*Reason*\n{_esc(a['reason'])}", 3000)}}
        )
    return {"text": _cut(text, _SLACK_TEXT_MAX), "blocks": blocks}


def payload(event: str, approval: Mapping[str, Any], status_url: str, fmt: str) -> dict[str, Any]:
    """The message about ``event`` on ``approval`` in format ``fmt`` ("json" or "slack"); raises ValueError."""
    if event not in EVENTS:
        raise ValueError(f"unknown approval event {event!r}")
    a = _fields(approval)
    if fmt == "json":
        return {"event": event, "approval": a, "url": status_url}
    if fmt == "slack":
        return _slack(event, a, status_url)
    raise ValueError(f"unknown webhook format {fmt!r}")


# --- delivery --------------------------------------------------------------------------------------------------

Result = Callable[[str, str, bool, str], None]


class Notifier:
    """Delivers approval notifications to webhook targets in background tasks. See the module docstring."""

    def __init__(
        self,
        targets: Sequence[WebhookTarget],
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
        timeout: float = 5.0,
        on_result: Result | None = None,
        max_pending: int = 10_000,
        concurrency: int = 32,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.targets = tuple(targets)
        self.attempts = attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.on_result = on_result
        self.max_pending = max_pending
        self.concurrency = concurrency
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight."""
        return len(self._tasks)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._sem = asyncio.Semaphore(self.concurrency)
        self._closing = False
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.concurrency, enable_cleanup_closed=True, resolver=GuardedResolver(current_guard())
            ),
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies kept between deliveries
            headers={"User-Agent": "Portcullis-approvals"},
            trust_env=False,
        )

    def notify(self, event: str, approval: Mapping[str, Any], status_url: str) -> None:
        """Queue ``event`` about ``approval`` for every target. Never blocks, never raises; callable from any thread."""
        try:
            approval_id = str(approval.get("id"))
        except Exception:  # not even a mapping: nothing to report against
            log.warning("approval notification dropped: the approval is not a mapping")
            return
        if not self.targets:
            return
        try:
            bodies = {
                fmt: orjson.dumps(payload(event, approval, status_url, fmt)) for fmt in {t.format for t in self.targets}
            }
        except Exception as exc:
            log.warning("approval %s: %s notification not built (%s)", approval_id, event, type(exc).__name__)
            for t in self.targets:
                self._report(approval_id, t.origin, False, "message not built")
            return
        loop = self._loop
        if loop is None or self._closing or loop.is_closed():
            for t in self.targets:
                self._report(approval_id, t.origin, False, "dropped: notifier not running")
            return
        if threading.get_ident() == self._loop_thread:
            self._enqueue(approval_id, event, bodies)
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, approval_id, event, bodies)
        except RuntimeError:  # the loop closed meanwhile
            for t in self.targets:
                self._report(approval_id, t.origin, False, "dropped: notifier not running")

    def alert(self, ref: str, event: str, body: Mapping[str, Any], text: str) -> None:
        """Queue an operational alert (not about an approval): ``body`` for JSON targets, ``text`` for Slack ones.
        Never blocks, never raises; callable from any thread."""
        try:
            bodies = {"json": orjson.dumps({"event": event, **body}), "slack": orjson.dumps({"text": _cut(text, 3000)})}
        except Exception as exc:
            log.warning("%s alert not built (%s)", event, type(exc).__name__)
            return
        loop = self._loop
        if loop is None or self._closing or loop.is_closed():
            log.warning("%s alert dropped: notifier not running", event)
            return
        if threading.get_ident() == self._loop_thread:
            self._enqueue(ref, event, bodies)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._enqueue, ref, event, bodies)

    def _enqueue(self, approval_id: str, event: str, bodies: Mapping[str, bytes]) -> None:
        for t in self.targets:
            if self._closing or self._http is None:
                self._report(approval_id, t.origin, False, "dropped: notifier closed")
                continue
            if len(self._tasks) >= self.max_pending:
                log.warning("approval %s: %s notification to %s dropped (queue full)", approval_id, event, t.origin)
                self._report(approval_id, t.origin, False, f"dropped: {self.max_pending} deliveries pending")
                continue
            task = spawn(self._deliver(t, approval_id, event, bodies[t.format]), name=f"notify {approval_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _delay(self, n: int, retry_after: str | None) -> float:
        """The wait after failed attempt ``n`` (0-based)."""
        if retry_after is not None:
            try:
                seconds = float(retry_after.strip())
            except ValueError:
                seconds = -1.0  # an HTTP date: fall back to the backoff
            if math.isfinite(seconds) and seconds >= 0:
                return min(seconds, self.backoff_max)
        return float(min(self.backoff * 2**n, self.backoff_max))

    async def _deliver(self, target: WebhookTarget, approval_id: str, event: str, body: bytes) -> None:
        where = target.origin
        failures: dict[str, int] = {}  # what went wrong, in order, how often
        made = 0
        headers = {**target.headers, "Content-Type": "application/json"}
        try:
            for n in range(self.attempts):
                made = n + 1
                retry_after: str | None = None
                try:
                    status, retry_after = await self._post(target.url, body, headers)
                except TimeoutError:
                    problem = "timeout"
                except aiohttp.ClientConnectorError as exc:
                    refused = isinstance(exc.os_error, ConnectionRefusedError)
                    problem = "connection refused" if refused else f"connection failed ({type(exc.os_error).__name__})"
                except aiohttp.ClientError as exc:  # the message may hold the URL: only the class is named
                    problem = f"connection error ({type(exc).__name__})"
                else:
                    if 200 <= status < 300:
                        done = f"HTTP {status} after {made} attempt{'s' if made > 1 else ''}"
                        if made > 1:
                            log.info(
                                "approval %s: %s notification delivered to %s (%s)", approval_id, event, where, done
                            )
                        self._report(approval_id, where, True, done)
                        return
                    problem = f"HTTP {status}"
                    if not (status in RETRY_STATUSES or status >= 500):
                        failures[problem] = failures.get(problem, 0) + 1
                        why = "redirect not followed" if 300 <= status < 400 else "not retried"
                        self._give_up(approval_id, event, where, f"{_summary(failures)}, {why}")
                        return
                failures[problem] = failures.get(problem, 0) + 1
                if n + 1 < self.attempts:
                    delay = self._delay(n, retry_after)
                    log.debug("approval %s: notification to %s: %s, retry in %.2fs", approval_id, where, problem, delay)
                    await asyncio.sleep(delay)
            self._give_up(approval_id, event, where, _summary(failures))
        except asyncio.CancelledError:
            self._give_up(approval_id, event, where, f"cancelled at shutdown after {made} attempt(s)")
            raise
        except Exception as exc:  # a bug or an unusable header: report it, don't leave a task with an exception
            self._give_up(approval_id, event, where, f"error ({type(exc).__name__})")

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str | None]:
        http, sem = self._http, self._sem
        if http is None or sem is None:
            raise RuntimeError("notifier not started")
        async with (
            sem,
            http.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp,
        ):
            return resp.status, resp.headers.get("Retry-After")

    def _give_up(self, approval_id: str, event: str, where: str, detail: str) -> None:
        log.warning("approval %s: %s notification to %s not delivered: %s", approval_id, event, where, detail)
        self._report(approval_id, where, False, detail)

    def _report(self, approval_id: str, where: str, delivered: bool, detail: str) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(approval_id, where, delivered, detail)
        except Exception as exc:
            log.warning("approval %s: notification result callback failed (%s)", approval_id, type(exc).__name__)

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking notifications; wait up to ``grace`` seconds for deliveries in flight, then cancel the rest."""
        self._closing = True
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=max(grace, 0.0))
            for t in late:
                t.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None


def _summary(failures: Mapping[str, int]) -> str:
    return ", ".join(f"{what} {_TIMES}{count}" for what, count in failures.items())
