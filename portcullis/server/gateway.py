"""The gateway's shared state: config, pipeline, store writer, upstreams and sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from portcullis import __version__, errors
from portcullis.approvals.book import DECIDED_CHANNEL, ApprovalBook, TooManyPending
from portcullis.approvals.model import APPROVED, DENIED, PENDING, WITHDRAWN, Hold
from portcullis.approvals.notify import Notifier, WebhookTarget
from portcullis.approvals.tasks import HeldTasks
from portcullis.audit.export import build_exporter
from portcullis.config.model import Config, RetentionConfig, ServerConfig, WebhookConfig
from portcullis.errors import StoreError, UpstreamError
from portcullis.flow import Binding, Flow, Outcome, Record
from portcullis.identity.edge import METADATA_PATH, Authenticator
from portcullis.observe.metrics import GatewayCollector, TrailMetrics
from portcullis.observe.tracing import Tracing
from portcullis.observe.tracing import install as install_tracing
from portcullis.pipeline import Pipeline, Stage
from portcullis.pipeline.authz import HELD, AuthzStage
from portcullis.pipeline.bind import UNREADABLE, BindStage
from portcullis.pipeline.mask import MaskStage, build_masker, build_sealer, mask_class_names
from portcullis.pipeline.pin import DEFAULT_SCAN, DefinitionBook, PinStage
from portcullis.pipeline.record import RecordStage, event_record
from portcullis.policy import PolicyStore
from portcullis.policy.load import load_policy_text
from portcullis.server.limits import RATE_LIMITED, Limits
from portcullis.server.sessions import GatewaySession, SessionTable
from portcullis.server.translation import EraProbe, SharedUpstream
from portcullis.store import apikeys
from portcullis.store import definitions as definition_store
from portcullis.store.audit_keys import public_pem
from portcullis.store.chain import SESSION_CHAINED
from portcullis.store.queries import binding_owners, get_session
from portcullis.store.writer import Fanout, Item, SessionEnd, SessionOpen, StoreWriter
from portcullis.tasks import spawn
from portcullis.tunnel.hub import AgentHub, AgentUpstream
from portcullis.tunnel.stdio import TunnelStdioSession
from portcullis.upstream import h1
from portcullis.upstream.http import HttpUpstream
from portcullis.upstream.netguard import GuardedResolver, NetGuard, set_guard
from portcullis.upstream.routed import RestartGate, RoutedSession
from portcullis.upstream.sse import LegacySseSession
from portcullis.upstream.stdio import StdioSession
from portcullis.wire.mcp import Era

log = logging.getLogger("portcullis.gateway")


class Waiter:
    """A held call's wait, as the edge sees it: ``cancel()`` (the client's notifications/cancelled) withdraws it, and
    so does the caller's connection closing (``transport``, looked at every ``approvals.poll_interval``)."""

    __slots__ = ("event", "transport", "withdrawn")

    def __init__(self, transport: asyncio.BaseTransport | None = None) -> None:
        self.event = asyncio.Event()
        self.withdrawn = False
        self.transport = transport

    @property
    def hung_up(self) -> bool:
        return self.transport is not None and self.transport.is_closing()

    @property
    def cancelled(self) -> bool:
        if not self.withdrawn and self.hung_up:
            self.withdrawn = True
        return self.withdrawn

    def cancel(self) -> None:
        self.withdrawn = True
        self.event.set()


def audit_signing(config: Config) -> dict[str, Any]:
    """The store writer's checkpoint signer from ``recording.signing_key_file`` or ``signing_key_env`` (neither:
    a chain without seals)."""
    from portcullis.store.audit_keys import load_signer, signer_from_pem

    rec = config.recording
    if rec.signing_key_env is not None:
        pem = os.environ.get(rec.signing_key_env)
        if not pem:
            raise ValueError(f"recording.signing_key_env: environment variable {rec.signing_key_env} is not set")
        signer, key_id = signer_from_pem(pem.encode(), f"environment variable {rec.signing_key_env}")
    elif rec.signing_key_file is not None:
        signer, key_id = load_signer(rec.signing_key_file)
    else:
        return {}
    return {
        "signer": signer,
        "key_id": key_id,
        "checkpoint_every": rec.checkpoint_every,
        "checkpoint_interval": rec.checkpoint_interval,
    }


def chain_name(config: Config) -> str:
    """This gateway's audit chain (``recording.chain``): on PostgreSQL, one per replica by default."""
    if config.recording.chain is not None:
        return config.recording.chain
    if config.store.startswith("sqlite"):
        return "gateway"
    return f"gateway-{socket.gethostname()}"[:64]


def build_alerter(config: Config) -> Notifier:
    """Webhooks told when the recording store fails and recovers (``recording.alerts``)."""
    return Notifier(webhook_targets(config.recording.alerts, "recording.alerts"), attempts=5, backoff=1.0)


def webhook_targets(hooks: Sequence[WebhookConfig], where: str) -> list[WebhookTarget]:
    targets = []
    for w in hooks:
        url = os.environ.get(w.url[4:], "") if w.url.startswith("env:") else w.url
        if not url:
            raise ValueError(f"{where}: environment variable {w.url[4:]} is not set")
        headers = {h: os.environ.get(env, "") for h, env in w.headers_from_env.items()}
        targets.append(WebhookTarget(url, w.format, headers))
    return targets


def build_notifier(config: Config, on_result: Callable[[str, str, bool, str], None]) -> Notifier:
    a = config.approvals
    targets = webhook_targets(a.webhooks, "approvals.webhooks")
    return Notifier(targets, attempts=a.webhook_attempts, backoff=a.webhook_backoff, on_result=on_result)


JUSTIFICATION_HEADER = "Portcullis-Justification"
EXPIRY_SWEEP = 2.0  # seconds between sweeps for pending approval requests past their expiry
BREAK_GLASS_HEADER = "Portcullis-Break-Glass"
MAX_JUSTIFICATION = 1000


def build_pipeline(names: list[str], policy: PolicyStore, mask: MaskStage, pin: PinStage | None = None) -> Pipeline:
    """The stages in the configured order (config.pipeline), each built with what it needs."""
    factories: dict[str, Callable[[], Stage]] = {
        "record": RecordStage,
        "bind": BindStage,
        "authz": lambda: AuthzStage(lambda: policy.engine),
        "mask": lambda: mask,
        "pin": lambda: pin or PinStage(DefinitionBook({}, DEFAULT_SCAN, True)),
    }
    return Pipeline([factories[n]() for n in names])


ALLOW_ALL_POLICY = """\
# The built-in policy when no policy file is configured: every authenticated caller may use everything.
version: 1
default: deny
rules:
  - id: builtin-allow-all
    allow: {}
"""


def load_policy_store(config: Config) -> PolicyStore:
    if config.policy.file is not None:
        return PolicyStore(config.policy.file)  # raises PolicyError with file:line problems
    log.warning("no policy file configured: every authenticated caller may use every server")
    return PolicyStore("<builtin-allow-all>", loader=lambda _p: load_policy_text(ALLOW_ALL_POLICY, "<builtin>"))


class Changes:
    """A change counter that coroutines can wait on (no lost wake-ups: they wait for the count to pass theirs)."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        ev, self._event = self._event, asyncio.Event()
        ev.set()

    async def wait_past(self, seen: int) -> None:
        while self.version <= seen:
            await self._event.wait()


class Gateway:
    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.netguard = NetGuard(config.network.private_hosts, config.network.private_ranges)
        set_guard(self.netguard)  # the webhook notifier and the audit exporters connect through it too
        self.policy = load_policy_store(config)
        # one masker (compiled once): the mask stage's, also used for the held arguments approvers read
        self._masker = build_masker(config.masking)
        d = config.definitions
        self.definitions = DefinitionBook(
            d.pins, {**(DEFAULT_SCAN if d.scan_defaults else {}), **d.scan}, d.on_change == "block"
        )
        self.pipeline = build_pipeline(
            config.pipeline,
            self.policy,
            MaskStage(self._masker, build_sealer(config.masking)),
            PinStage(self.definitions),
        )
        signing = audit_signing(config)
        self.audit_public_key: bytes | None = public_pem(signing["signer"]) if signing else None  # for verifiers
        self.audit_key_id: str | None = signing.get("key_id")
        self.alerts = build_alerter(config) if config.recording.alerts else None
        self.tracing = Tracing(config.tracing)
        install_tracing(self.tracing)
        self.exporter = build_exporter(config.recording.export)  # streams of the committed trail (audit/export)
        self.registry = CollectorRegistry()  # this gateway's metrics (GET /metrics), counted from committed records
        self.metrics = TrailMetrics(self.registry, config.servers, mask_class_names(config.masking))
        self.registry.register(GatewayCollector(self._observed))
        self.writer = StoreWriter(
            engine,
            **signing,
            on_health=self._store_health,
            chain_id=chain_name(config),
            listener=Fanout([self.metrics, *([self.exporter] if self.exporter is not None else [])]),
        )
        self.sessions = SessionTable(config.limits.max_sessions)
        self.limits = Limits(config.limits.rate)
        bind = self.pipeline.stage("bind")
        self._bind: BindStage | None = bind if isinstance(bind, BindStage) else None
        via_agent = frozenset(n for n, s in config.servers.items() if s.via == "agent")
        self.agents = AgentHub(engine, via_agent, self.record_event, self.writer.chain_id)
        a = config.approvals
        self.approvals = ApprovalBook(engine, a.ttl, a.release_window, a.required)
        self._decisions: dict[str, asyncio.Event] = {}  # approval id -> set when it is decided (in this process)
        self.approvals_changed = Changes()  # a request opened or decided: wakes the console's live inboxes
        self.held_tasks = HeldTasks()  # tasks the gateway minted for held calls (2026-07-28 tasks extension)
        self.notifier = build_notifier(config, self._notified) if a.webhooks else None
        self._notify_where: dict[str, tuple[str, str | None]] = {}  # approval id -> (server, session) for the record
        self.durable = config.recording.durability == "commit"
        self.http: aiohttp.ClientSession | None = None
        self.h1: h1.Pool | None = None
        self.http_upstreams: dict[str, HttpUpstream] = {}
        self.channel_servers: dict[str, ServerConfig] = {}  # stdio and legacy SSE: one channel per session
        self.restart_gates: dict[str, RestartGate] = {}
        self.era_probe = EraProbe()
        # no one is let in before start(): the real authenticator needs the HTTP client for the issuers' keys
        self.auth = Authenticator(config.auth, None) if config.auth.mode == "none" else Authenticator.closed()
        self.public_base = (config.public_url or f"http://{config.listen}").rstrip("/")
        self._shared: dict[str, SharedUpstream] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.draining = False
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self.alerts is not None:
            await self.alerts.start()
        if self.exporter is not None:
            self.exporter.start()
        self.writer.start(asyncio.get_running_loop())
        # a key change shows in the trail: each start names the checkpoint key and the policy it runs with
        self.record_event(
            "-",
            None,
            "gateway_started",
            f"portcullis {__version__}, chain {self.writer.chain_id}, checkpoint key {self.audit_key_id or 'none'}, "
            f"policy {self.policy.version}",
        )
        await self.agents.start()
        if self.notifier is not None:
            await self.notifier.start()
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,
                limit_per_host=0,
                keepalive_timeout=60,
                enable_cleanup_closed=True,
                resolver=GuardedResolver(self.netguard),  # names to private addresses: only as configured
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            # an upstream's cookies must never flow from one client's session into another's
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self.h1 = h1.Pool(limit_per_host=0, keepalive_timeout=60.0, guard=self.netguard)
        lim = self.config.limits
        for name, scfg in self.config.servers.items():
            if scfg.kind in ("stdio", "sse", "agent-stdio"):
                self.channel_servers[name] = scfg
                self.restart_gates[name] = RestartGate(scfg.restart_backoff_max)
            elif scfg.kind == "agent":
                self.http_upstreams[name] = AgentUpstream(  # type: ignore[assignment]
                    name, scfg, self.agents, self.http, lim.max_sse_event_bytes, lim.max_body_bytes * 16
                )
            else:
                self.http_upstreams[name] = HttpUpstream(
                    name, scfg, self.http, lim.max_sse_event_bytes, lim.max_body_bytes * 16, self.h1
                )
        self.auth = Authenticator(self.config.auth, self.http, self.public_base)
        if self.auth.enabled:
            await self.auth.prime()
            self.auth.reload_api_keys = self.reload_api_keys
            await self.reload_api_keys()
            self.background(self._refresh_api_keys(), name="api-keys")
        self._reaper = spawn(self._reap_idle(), name="session-reaper")
        if self.config.policy.file is not None:
            self.background(self._watch_policy(), name="policy-watch")
        if self.config.recording.retention is not None:
            self.background(self._retention(self.config.recording.retention), name="retention")
        if self.engine.dialect.name == "postgresql":
            self.background(self._listen_decisions(), name="approval-notify")
        self.background(self._expire_approvals(), name="approval-expiry")
        if "pin" in self.config.pipeline:
            # the pins must be known before the first listing: an empty book would trust a changed definition
            # again on "first sight" (fail open), so a store that cannot be read here stops the start
            self.definitions.load(await asyncio.to_thread(definition_store.load_rows, self.engine))
            self.background(self._sync_definitions(), name="definitions")

    def begin_drain(self) -> None:
        """SIGTERM: readiness goes false, new requests are refused (503), and calls waiting for an approval are
        answered now with their approval request (pending), which the client retries, on any replica."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: new requests are refused; in-flight calls get %.0f s", self.config.limits.drain_timeout)
        for ev in list(self._decisions.values()):
            ev.set()

    async def stop(self) -> None:
        self.begin_drain()
        if self.notifier is not None:
            await self.notifier.close(grace=2.0)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for t in list(self._background):
            t.cancel()
        for t in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for s in self.sessions.all():
            await self.end_session(s, "gateway shutdown", notify_upstream=False)
        for shared in self._shared.values():
            await shared.close()
        await self.agents.close()
        if self.http is not None:
            await self.http.close()
        if self.h1 is not None:
            await self.h1.close()
        self.writer.close()
        if self.exporter is not None:  # after the writer: its last records and the shutdown checkpoint go out too
            await asyncio.to_thread(self.exporter.close, 5.0)
        if self.alerts is not None:
            await self.alerts.close(grace=2.0)
        await asyncio.to_thread(self.tracing.shutdown)

    def _observed(self) -> dict[str, Any]:
        """What the metrics read at scrape time."""
        w = self.writer
        exporter = self.exporter
        return {
            "healthy": 1 if w.healthy else 0,
            "written": w.written,
            "batches": w.batches,
            "failures": w.failures,
            "sessions": len(self.sessions),
            "draining": 1 if self.draining else 0,
            "exports": exporter.stats() if exporter is not None else [],
            "agents": self.agents.observed(),
        }

    def _store_health(self, healthy: bool, why: str) -> None:
        """The writer thread: the store began failing (traffic is refused) or recovered. Alerts go out from here."""
        if self.alerts is None:
            return
        event = "recording_store_recovered" if healthy else "recording_store_failing"
        what = "recovered: traffic flows again" if healthy else f"failing ({why}): traffic is refused"
        body = {"gateway": self.public_base, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "detail": why}
        self.alerts.alert("recording-store", event, body, f"Portcullis {self.public_base}: the recording store {what}")

    async def _expire_approvals(self) -> None:
        """Pending requests that pass their expiry are marked expired, recorded (``approval_expired``) and told to
        the webhooks, within :data:`EXPIRY_SWEEP` seconds; on several replicas each by exactly one."""
        while True:
            await asyncio.sleep(EXPIRY_SWEEP)
            try:
                expired = await asyncio.to_thread(self.approvals.expire_due)
            except Exception as exc:  # the store is down: the next sweep tries again (nothing is lost)
                log.warning("approval expiry sweep: %s", type(exc).__name__)
                continue
            for row in expired:
                what = f"{row['method']} {row['target']}" if row["target"] else row["method"]
                self.record_event(row["server"], row["session_id"], "approval_expired", f"{row['id']}: {what}")
                self.notify_approval("expired", row)
            if expired:
                self.approvals_changed.bump()

    async def _listen_decisions(self) -> None:
        """PostgreSQL: decisions taken through any replica (NOTIFY from the approval book) wake the calls held here
        at once; the store poll (approvals.poll_interval) stays as the fallback while this connection is down."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {DECIDED_CHANNEL}")
                    backoff = 0.5
                    async for note in conn.notifies():
                        self.approval_decided(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("approval notifications: %s; retrying in %.1f s", type(exc).__name__, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _sync_definitions(self) -> None:
        """Sightings of the pin stage to the store; acceptances (the CLI, other replicas) back from it."""
        every = self.config.definitions.refresh
        loop = asyncio.get_running_loop()
        next_load = loop.time() + every
        while True:
            await asyncio.sleep(min(every, 1.0))
            seen = self.definitions.drain()
            if seen:
                try:
                    await asyncio.to_thread(definition_store.save, self.engine, seen)
                except Exception as exc:
                    log.warning("definition sightings not stored: %s", type(exc).__name__)
                    self.definitions.requeue(seen)  # kept for the next round
            if loop.time() >= next_load:
                next_load = loop.time() + every
                try:
                    self.definitions.load(await asyncio.to_thread(definition_store.load_rows, self.engine))
                except Exception as exc:
                    log.warning("definitions not read from the store: %s", type(exc).__name__)

    async def _retention(self, r: RetentionConfig) -> None:
        """Prune by age/size now and then (docs: store/retention.py). A failed pass is logged and retried later."""
        from portcullis.store.retention import cutoff, prune

        while True:
            try:
                result = await asyncio.to_thread(prune, self.engine, before_ns=cutoff(r.max_age), max_bytes=r.max_bytes)
                if result.cuts:
                    log.info("retention: %s", result.summary())
            except Exception as exc:
                log.error("retention pass failed: %s", type(exc).__name__)
            await asyncio.sleep(r.interval)

    async def reload_api_keys(self) -> None:
        try:
            keys = await asyncio.to_thread(apikeys.load_all, self.engine)
        except Exception as exc:  # keep the keys we have; a store outage must not let revoked keys back in
            log.error("could not read API keys: %s", type(exc).__name__)
            return
        self.auth.set_api_keys(keys)

    async def _refresh_api_keys(self) -> None:
        """Revocations made elsewhere (the CLI, another replica) take effect within the refresh interval."""
        while True:
            await asyncio.sleep(self.config.auth.api_key_refresh)
            await self.reload_api_keys()

    async def _watch_policy(self) -> None:
        """Policies reload without a restart; a broken file is refused and the last good policy stays."""
        while True:
            await asyncio.sleep(self.config.policy.reload_interval)
            result = self.policy.check()
            if result is None or (not result.changed and not result.problems):
                continue
            if result.problems:
                log.error("policy file refused, keeping version %s: %s", result.version, "; ".join(result.problems))
                self.record_event("-", None, "policy_refused", "; ".join(result.problems)[:2000])
            else:
                log.info("policy reloaded: %s -> %s", result.previous_version, result.version)
                self.record_event("-", None, "policy_reload", f"{result.previous_version} -> {result.version}")

    def background(self, coro: Any, name: str) -> None:
        """Work that outlives the request that started it (kept and cancelled at shutdown)."""
        task = spawn(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def speaks_stateless(self, server: str) -> bool:
        """Whether 2026-07-28 requests can go to this upstream as they are (else: a shared session translates)."""
        cfg = self.config.servers[server]
        if cfg.era in ("stateless", "both"):
            return True
        if cfg.era == "session" or server not in self.http_upstreams:
            return False
        try:
            return await self.era_probe.speaks_stateless(self.http_upstreams[server])
        except UpstreamError:
            return True  # unknown (unreachable now): pass the request on, and let it fail with the real reason

    async def needs_stateless_session(self, server: str) -> bool:
        """Whether a session-era client of this upstream must be translated to 2026-07-28 requests."""
        cfg = self.config.servers[server]
        if cfg.era == "stateless":
            return True
        if cfg.era in ("session", "both") or server not in self.http_upstreams:
            return False
        up = self.http_upstreams[server]
        try:
            return not await self.era_probe.speaks_session(up) and await self.era_probe.speaks_stateless(up)
        except UpstreamError:
            return False  # unknown (unreachable now): pass initialize on, and let it fail with the real reason

    def new_channel(self, server: str, gated: bool = True) -> RoutedSession:
        """A new stdio child or legacy SSE connection for one session of ``server`` (not started yet)."""
        cfg = self.channel_servers[server]
        gate = self.restart_gates[server] if gated else None
        lim = self.config.limits.max_sse_event_bytes
        if cfg.kind == "stdio":
            return StdioSession(server, cfg, lim, gate)
        if cfg.kind == "agent-stdio":
            return TunnelStdioSession(server, cfg, self.agents, lim, gate)
        assert self.http is not None
        return LegacySseSession(server, cfg, self.http, lim, gate)

    def shared(self, server: str) -> SharedUpstream:
        """The gateway's own session with a session-era upstream, for 2026-07-28 clients."""
        s = self._shared.get(server)
        if s is None:
            http = self.http_upstreams.get(server)
            s = SharedUpstream(
                server, http, None if http is not None else lambda: self.new_channel(server, gated=False)
            )
            self._shared[server] = s
        return s

    def resource_url(self, server: str) -> str:
        """The canonical resource URL of a server's endpoint (RFC 8707): tokens are minted for it."""
        return f"{self.public_base}/mcp/{server}"

    def audiences(self, server: str) -> list[str]:
        """Token audiences accepted on a server's endpoint: its own resource URL, or the gateway as a whole."""
        return [self.resource_url(server), self.public_base]

    def metadata_url(self, server: str) -> str:
        return f"{self.public_base}{METADATA_PATH}/mcp/{server}"

    def known(self, server: str) -> bool:
        return server in self.http_upstreams or server in self.channel_servers

    # --- recording -----------------------------------------------------------------------------------------

    async def commit(self, records: Sequence[Item]) -> None:
        """Make records durable before the caller releases what they describe (durability 'commit')."""
        if not records:
            return
        items = list(records)
        if isinstance(records, list):
            records.clear()
        if self.durable:
            await self.writer.write(items)  # raises StoreError
        else:
            if not self.writer.healthy:
                raise StoreError("recording store unavailable")
            self.writer.submit(list[Item](items), wait=False)

    async def record_request(self, records: list[Record | Binding]) -> None:
        """A request's records before it is forwarded: queued while the store is healthy; while it is failing, this
        write is the probe and must succeed first (raises StoreError), so nothing reaches an upstream unrecorded."""
        if self.writer.healthy:
            self.submit(records)
        else:
            await self.commit(records)

    def submit(self, records: list[Record | Binding]) -> None:
        if records:
            items: list[Item] = list(records)
            records.clear()
            self.writer.submit(items, wait=False)

    # --- the request walk, with held calls settled against the approval book -------------------------------

    async def run_request(
        self,
        flow: Flow,
        headers: Mapping[str, str] | None = None,
        progress: Callable[[int, str], Awaitable[None]] | None = None,
        cancel_slot: tuple[dict[object, Any], object] | None = None,
        wait: bool = True,
        open_request: bool = True,
        transport: asyncio.BaseTransport | None = None,
    ) -> int:
        """The request stages; a held call is then settled: released by its approval (once), by a live grant, or
        by a break-glass caller with a reason; else answered with the approval request to decide (after waiting,
        bounded, for the decision when ``approvals.wait`` is set). Returns how many stages saw the request."""
        if self._bind is not None and (missing := self._bind.unknown(flow)):
            # an id minted through another replica (or before a restart): who it belongs to is in the store
            try:
                owners = await asyncio.to_thread(binding_owners, self.engine, missing)
            except Exception as exc:  # cannot tell whose it is: the bind stage refuses it (fail closed)
                log.warning("bindings unavailable: %s", type(exc).__name__)
                owners = {key: UNREADABLE for key in missing}
            self._bind.learn(flow, owners)
        seen = self.pipeline.run_request(flow)
        hold = flow.hold
        if hold is None or flow.response is None or flow.answered_by != "authz":
            return seen
        h = headers or {}
        justification = (h.get(JUSTIFICATION_HEADER) or "").strip()[:MAX_JUSTIFICATION] or None
        glass = (h.get(BREAK_GLASS_HEADER) or "").strip()[:MAX_JUSTIFICATION]
        try:
            released = await asyncio.to_thread(self.approvals.release, hold)
            if released is not None:
                return self._release(flow, hold, released["id"], seen, "")
            grant = await asyncio.to_thread(self.approvals.grant_for, hold)
            if grant is not None:
                return self._release(flow, hold, grant["approval_id"], seen, f" (grant {grant['id']})")
            if glass and hold.requester_groups & set(self.config.approvals.break_glass_groups):
                row = await asyncio.to_thread(self.approvals.break_glass, hold, glass)
                self.record_event(
                    flow.server, flow.session_id, "approval_break_glass", f"{row['id']}: {hold.method} {hold.target}"
                )
                return self._release(flow, hold, row["id"], seen, " (break-glass; awaits review)")
            if not open_request:
                return seen  # settling a task: nothing to release means the approval went elsewhere; no new request
            shown = self._shown_arguments(flow)
            cap = self.config.approvals.max_pending_per_principal
            req, created = await asyncio.to_thread(self.approvals.open, hold, None, justification, shown, cap)
            if created:
                self.approvals_changed.bump()
        except TooManyPending as exc:
            flow.fail(
                RATE_LIMITED,
                f"Too many calls awaiting approval: {exc.pending} of yours are pending (approvals."
                "max_pending_per_principal); this one was not asked. Retry once some are decided or expire",
                by="approvals",
                outcome=Outcome.DENIED,
                data={"limit": "pending approvals", "pending": exc.pending},
            )
            return seen
        except Exception as exc:  # the book cannot be read: the call stays held (fail closed)
            log.warning("approval book unavailable: %s", type(exc).__name__)
            flow.fail(
                errors.STORE_UNAVAILABLE,
                "Held for approval, and the approval book is unavailable: try again later",
                by="approvals",
                outcome=Outcome.FAILED,
            )
            return seen
        if created:
            self.record_event(
                flow.server,
                flow.session_id,
                "approval_requested",
                f"{req['id']}: {hold.method} {hold.target} by rule {hold.rule}, approvers {list(hold.approvers)}",
            )
            self.notify_approval("requested", {**req, "approvers": list(hold.approvers)})
        if req["state"] == PENDING and self.config.approvals.wait > 0 and wait:
            try:
                waiter = Waiter(transport)  # the client's notifications/cancelled, or its hanging up, withdraws it
                slots, key = cancel_slot if cancel_slot is not None else ({}, None)
                slots.setdefault(key, waiter)
                try:
                    decided = await self._await_decision(req["id"], progress, waiter)
                finally:
                    if slots.get(key) is waiter:
                        del slots[key]
                if decided == WITHDRAWN:
                    await asyncio.to_thread(self.approvals.withdraw, req["id"])
                    why = "the caller hung up" if waiter.hung_up else "cancelled"
                    self.record_event(flow.server, flow.session_id, "approval_withdrawn", f"{req['id']}: {why}")
                    self.approvals_changed.bump()
                    flow.fail(
                        HELD,
                        f"Withdrawn: the call was cancelled while it waited for approval {req['id']}",
                        by="authz",
                        outcome=Outcome.DENIED,
                        data={"approval": req["id"], "withdrawn": True},
                    )
                    return seen
                if decided == APPROVED:
                    released = await asyncio.to_thread(self.approvals.release, hold)
                    if released is not None:
                        return self._release(flow, hold, released["id"], seen, " while the caller waited")
                if decided == DENIED:
                    got = await asyncio.to_thread(self.approvals.get, req["id"])
                    if got is not None:
                        req = {**req, "state": DENIED, "reason": got["reason"], "decided_by": got["decided_by"]}
            except Exception as exc:  # the book failed while waiting: the call stays held, the answer names it
                log.warning("approval book unavailable while waiting: %s", type(exc).__name__)
        what = f"{hold.method} {hold.target}" if hold.target else hold.method
        url = f"{self.public_base}/admin/api/approvals/{req['id']}"
        if req["state"] == DENIED:
            why = f": {req['reason']}" if req["reason"] else ""
            flow.fail(
                errors.REQUEST_DENIED,
                f"Denied by an approver: {what} (approval request {req['id']}, {url}){why}",
                by="authz",
                outcome=Outcome.DENIED,
                data={"approval": req["id"], "status_url": url, "rule": hold.rule, "denied_by": req["decided_by"]},
            )
            return seen
        flow.fail(
            HELD,
            f"Held for approval: {what} needs approval by {list(hold.approvers)} (rule {hold.rule}). "
            f"Approval request {req['id']} ({url}); once approved, retry the same call with the same arguments.",
            by="authz",
            outcome=Outcome.DENIED,
            data={
                "held": True,
                "approval": req["id"],
                "status_url": url,
                "rule": hold.rule,
                "approvers": list(hold.approvers),
                "expires_ns": req["expires_ns"],
            },
        )
        if flow.request_record is not None:
            flow.request_record.detail = f"held: approval {req['id']}"
        return seen

    def _shown_arguments(self, flow: Flow) -> str | None:
        """The held call's params (without _meta) as approvers may read them: masked as for a caller with no
        groups (every configured class), never the original. None if they cannot be masked."""
        if self._masker is None:
            return None
        body = {"params": {k: v for k, v in flow.request.params.items() if k != "_meta"}}
        body = orjson.loads(orjson.dumps(body))  # a copy: the request itself must reach the upstream unchanged
        try:
            self._masker.mask(body, "params", self._masker.plan(flow.server, frozenset()), None, "approvals")
        except Exception:
            return None  # shown as "not available"; the binding is the digest either way
        text = orjson.dumps(body["params"]).decode()
        return text if len(text) <= 16_384 else None

    def mask_for_display(self, server: str, payload: str) -> tuple[str | None, list[dict[str, Any]]]:
        """A recorded client→server message as the admin API shows it: masked like a response to a caller with no
        groups (the record keeps what the client sent; masking of recorded requests is not built). ``(None, [])``
        when it cannot be masked: then it is not shown at all."""
        if self._masker is None:
            return payload, []
        try:
            body = {"message": orjson.loads(payload)}
            res = self._masker.mask(body, "message", self._masker.plan(server, frozenset()), None, "display")
        except Exception:
            return None, []
        if not res.changed:
            return payload, []
        return orjson.dumps(body["message"]).decode(), res.masked

    def _release(self, flow: Flow, hold: Hold, approval_id: str, seen: int, how: str) -> int:
        """The held call goes on: its answer is withdrawn and the stages after authz see the request."""
        flow.unanswer(f"released by approval {approval_id}{how}")
        if flow.request_record is not None:
            flow.request_record.detail = flow.detail
        self.record_event(
            flow.server, flow.session_id, "approval_released", f"{approval_id}: {hold.method} {hold.target}"
        )
        released = {
            "id": approval_id,
            "state": "released",
            "server": hold.server,
            "method": hold.method,
            "target": hold.target,
            "requester": hold.requester,
            "rule": hold.rule,
            "policy_version": hold.policy_version,
            "approvers": list(hold.approvers),
            "args_digest": hold.digest,
            "session_id": hold.session_id,
            "reason": how.strip(" ()") or None,
        }
        self.notify_approval("released", released)
        return self.pipeline.resume_request(flow, seen)

    def notify_approval(self, event: str, approval: dict[str, Any]) -> None:
        """Tell the configured webhooks (never blocks; delivery and retries run in the background)."""
        if self.notifier is None:
            return
        if len(self._notify_where) > 10_000:
            self._notify_where.clear()
        self._notify_where[approval["id"]] = (approval["server"], approval.get("session_id"))
        self.notifier.notify(event, approval, f"{self.public_base}/admin/api/approvals/{approval['id']}")

    def _notified(self, approval_id: str, where: str, delivered: bool, detail: str) -> None:
        server, session = self._notify_where.get(approval_id, ("-", None))
        kind = "approval_notified" if delivered else "approval_notify_failed"
        self.record_event(server, session, kind, f"{approval_id} -> {where}: {detail}")

    async def await_decision(self, approval_id: str, bound: float, waiter: Waiter | None = None) -> str:
        """The state the request reaches within ``bound`` seconds (pending if none): for a held call's task."""
        return await self._await_decision(approval_id, None, waiter, bound)

    def breaker_state(self, server: str) -> str | None:
        """The circuit breaker of an HTTP upstream (closed, open, half-open); None for other transports."""
        breaker = getattr(self.http_upstreams.get(server), "breaker", None)
        return None if breaker is None else str(breaker.state)

    def approval_decided(self, approval_id: str) -> None:
        """The admin API decided a request: wake the caller waiting for it in this process, if any."""
        self.approvals_changed.bump()
        ev = self._decisions.get(approval_id)
        if ev is not None:
            ev.set()

    async def _await_decision(
        self,
        approval_id: str,
        progress: Callable[[int, str], Awaitable[None]] | None = None,
        waiter: Waiter | None = None,
        bound: float | None = None,
    ) -> str:
        """Wait (bounded by ``approvals.wait``) until the request is decided; returns its state then. With
        ``progress``, says "awaiting approval" every ``progress_interval`` (the first time at once)."""
        cfg = self.config.approvals
        loop = asyncio.get_running_loop()
        ev = waiter.event if waiter is not None else asyncio.Event()
        ev = self._decisions.setdefault(approval_id, ev)
        if waiter is not None and ev is not waiter.event:
            ev = waiter.event  # another caller waits on the same request: this one is woken by its poll or its cancel
        deadline = loop.time() + (cfg.wait if bound is None else bound)
        next_progress = loop.time()
        sent = 0
        try:
            while True:
                now = loop.time()
                if progress is not None and now >= next_progress:
                    sent += 1
                    await progress(sent, f"awaiting approval {approval_id}")
                    next_progress = now + cfg.progress_interval
                left = deadline - now
                if left <= 0:
                    return PENDING
                step = min(left, cfg.poll_interval)
                if progress is not None:
                    step = min(step, max(next_progress - now, 0.001))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), timeout=step)
                if waiter is not None and waiter.cancelled:
                    return WITHDRAWN
                if self.draining:
                    return PENDING  # shutting down: the caller gets its approval request to retry elsewhere
                row = await asyncio.to_thread(self.approvals.get, approval_id)
                if row is None:
                    return PENDING
                if row["state"] != PENDING:
                    return str(row["state"])
                ev.clear()
        finally:
            if self._decisions.get(approval_id) is ev:
                del self._decisions[approval_id]

    def record_event(
        self, server: str, session_id: str | None, kind: str, detail: str, payload: bytes | None = None
    ) -> None:
        self.writer.submit([event_record(server, session_id, kind, detail, payload)], wait=False)

    # --- sessions ------------------------------------------------------------------------------------------

    async def open_session(self, s: GatewaySession, client_info: str | None) -> None:
        self.sessions.add(s)
        state = None
        if s.to_stateless:
            state = orjson.dumps({"to_stateless": True, "init_params": s.init_params}).decode()
        row = SessionOpen(
            id=s.id,
            server=s.server,
            era=s.era.value,
            protocol_version=s.protocol_version,
            client_info=client_info,
            principal=None,
            upstream_session=s.upstream_session,
            created_ns=time.time_ns(),
            owner=s.owner,
            state=state,
        )
        # the session row travels in its chained open record too, so that verification can check the table
        copy = orjson.dumps({k: getattr(row, k) for k in SESSION_CHAINED})
        await self.commit(
            [row, event_record(s.server, s.id, "session_open", f"protocol {s.protocol_version}", payload=copy)]
        )

    async def adopt_session(self, sid: str, server: str, caller: Any) -> GatewaySession | None:
        """A session another replica opened (the store has it, open): continue it here. Only sessions whose state
        lives in the store and upstream can move: an HTTP upstream's session (its ``Mcp-Session-Id``) or one the
        gateway keeps for a 2026-07-28 upstream; a stdio child or a legacy SSE connection stays on its replica.
        Streams that were open on the other replica are not resumable here (their buffers were in its memory)."""
        if server not in self.http_upstreams or len(self.sessions) >= self.sessions.max_sessions:
            return None
        try:
            row = await asyncio.to_thread(get_session, self.engine, sid)
        except Exception as exc:  # the store cannot say: the session is not found here (the client starts anew)
            log.warning("could not look up session in the store: %s", type(exc).__name__)
            return None
        if row is None or row["ended_ns"] is not None or row["server"] != server or row["era"] != Era.SESSION.value:
            return None
        state = orjson.loads(row["state"]) if row["state"] else {}
        s = GatewaySession(
            id=sid,
            server=server,
            era=Era.SESSION,
            owner=row["owner"] or "",
            caller=caller,
            protocol_version=row["protocol_version"],
            upstream_session=row["upstream_session"],
            established=True,
            buffer_size=self.config.limits.stream_buffer_events,
            to_stateless=bool(state.get("to_stateless")),
            init_params=state.get("init_params") or {},
        )
        if sid in self.sessions:  # adopted meanwhile by a concurrent request
            return self.sessions.get(sid)
        self.sessions.add(s)
        self.record_event(server, sid, "session_adopted", f"continued on chain {self.writer.chain_id}")
        return s

    async def end_session(self, s: GatewaySession, reason: str, *, notify_upstream: bool = True) -> None:
        if self.sessions.pop(s.id) is None:
            return
        for buf in s.streams.values():
            buf.close()
        if s.channel is not None:
            await s.channel.close()
        elif notify_upstream and s.upstream_session is not None and s.server in self.http_upstreams:
            up = self.http_upstreams[s.server]
            with contextlib.suppress(Exception):
                reply = await up.send(
                    "DELETE", None, {"MCP-Protocol-Version": s.protocol_version or ""}, s.upstream_session
                )
                await reply.aclose()
        if s.established:  # durable before the caller (e.g. a client's DELETE) hears that the session ended
            with contextlib.suppress(StoreError):
                await self.commit(
                    [SessionEnd(s.id, time.time_ns(), reason), event_record(s.server, s.id, "session_close", reason)]
                )

    async def _reap_idle(self) -> None:
        idle = self.config.limits.session_idle_timeout
        while True:
            await asyncio.sleep(min(60.0, idle / 2))
            for s in self.sessions.idle(idle):
                await self.end_session(s, "idle timeout")
