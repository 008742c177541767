"""Typed settings. Every key is documented in docs/configuration.md."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
DEFAULT_ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256")


class IssuerConfig(_Strict):
    """A trusted OpenID provider / OAuth authorization server."""

    issuer: str = Field(description="the issuer exactly as the provider spells it (it must equal the tokens' iss)")
    jwks_uri: str | None = Field(default=None, description="default: from the issuer's OpenID discovery document")
    jwks_hosts: list[str] = Field(
        default_factory=list,
        description="hosts (https) a discovered jwks_uri may name besides the issuer's own origin (SSRF guard)",
    )
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1)
    groups_claim: str = Field(default="groups", description="claim holding group names; dotted path for nesting")
    email_claim: str = "email"
    scopes_supported: list[str] = Field(
        default_factory=list, description="scopes advertised in the protected-resource metadata"
    )

    @field_validator("issuer", "jwks_uri")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("expected an http:// or https:// URL")
        return v


class DevIssuerConfig(_Strict):
    """The gateway's own small token issuer, for local development only."""

    enabled: bool = False
    key_file: str = "./portcullis-dev-issuer.jwk"
    token_ttl: int = Field(default=3600, gt=0, le=30 * 86400)


class AuthConfig(_Strict):
    mode: Literal["none", "oidc"] = Field(
        description="'none': no authentication (loopback listen addresses only); 'oidc': bearer tokens"
    )
    issuers: list[IssuerConfig] = Field(default_factory=list)
    required_scopes: list[str] = Field(default_factory=list, description="every token must carry these scopes")
    clock_skew: float = Field(default=30.0, ge=0, le=300)
    token_types: list[str] = Field(
        default_factory=lambda: ["at+jwt", "application/at+jwt", "JWT"],
        description="accepted JWT 'typ' header values (an absent typ is accepted)",
    )
    dev_issuer: DevIssuerConfig = DevIssuerConfig()
    api_key_refresh: float = Field(default=2.0, gt=0, description="seconds between reloads of API keys")
    jwks_min_refetch_interval: float = Field(default=1.0, ge=0)
    jwks_max_age: float = Field(default=600.0, gt=0)


class UpstreamOAuthConfig(_Strict):
    """The gateway's own OAuth token for an upstream (never the client's token).

    ``client_credentials``: a token for the gateway itself. ``token_exchange`` (RFC 8693): the gateway, authenticated
    as this confidential client, exchanges the caller's validated access token at ``token_url`` for a token whose
    audience is the upstream; the caller's token goes only to ``token_url``, never to the upstream.
    """

    grant: Literal["client_credentials", "token_exchange"] = Field(
        default="client_credentials",
        description="client_credentials: the gateway's own token; token_exchange: the caller's token exchanged "
        "(RFC 8693) for one whose audience is this upstream",
    )
    token_url: str
    client_id: str
    client_secret_env: str = Field(description="environment variable holding the client secret")
    scope: str | None = None
    resource: str | None = Field(
        default=None,
        description="RFC 8707 resource to ask the token for (token_exchange without audience: the upstream's url)",
    )
    audience: str | None = Field(
        default=None, description="token_exchange: RFC 8693 audience, the upstream's logical name at the provider"
    )
    subject_issuer: str | None = Field(
        default=None,
        description="token_exchange: only callers' tokens from this issuer are sent to token_url (others fail "
        "closed); default: a token from any trusted issuer",
    )
    cache_size: int = Field(
        default=10_000, gt=0, description="token_exchange: exchanged tokens kept (one per caller token)"
    )

    @field_validator("token_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("expected an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _exchange_only(self) -> UpstreamOAuthConfig:
        if self.grant != "token_exchange":
            for key in ("audience", "subject_issuer"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' needs grant: token_exchange")
        return self


class ServerConfig(_Strict):
    """One upstream MCP server: either ``command`` (stdio child) or ``url`` (Streamable HTTP or legacy SSE)."""

    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    env_passthrough: list[str] = Field(default_factory=list)
    cwd: str | None = None
    url: str | None = None
    transport: Literal["streamable-http", "sse", "stdio"] | None = None
    era: Literal["auto", "session", "stateless", "both"] = Field(
        default="auto",
        description="which MCP wire era the upstream speaks; auto probes an HTTP upstream once (stdio: session)",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header -> environment variable holding its value (the gateway's own secret)"
    )
    headers_from_file: dict[str, str] = Field(
        default_factory=dict, description="header -> file holding its value (e.g. a mounted Kubernetes Secret)"
    )
    oauth: UpstreamOAuthConfig | None = Field(
        default=None, description="the gateway's own OAuth client-credentials token for this upstream"
    )
    connect_timeout: float = Field(default=10.0, gt=0)
    call_timeout: float = Field(default=300.0, gt=0)
    startup_timeout: float = Field(default=60.0, gt=0)
    restart_backoff_max: float = Field(default=30.0, gt=0)
    breaker_threshold: int = Field(
        default=5, gt=0, description="consecutive failures to reach an HTTP upstream that open its circuit"
    )
    breaker_cooldown: float = Field(default=5.0, gt=0, description="seconds an open circuit answers at once")
    via: Literal["direct", "agent"] = Field(
        default="direct",
        description="agent: the server is reached through a connected `portcullis agent` that announces it (no "
        "url or command here: they, and the server's secrets, stay with the agent)",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ServerConfig:
        if self.via == "agent":
            if self.command is not None or self.url is not None or self.transport == "sse":
                raise ValueError(
                    "a server reached through an agent has no 'url' or 'command' here (the agent's file has them); "
                    "'transport' may say stdio (a process the agent starts per session) or streamable-http"
                )
            return self
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'command' (a stdio server) or 'url' (an HTTP server)")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError("'url' must start with http:// or https://")
        if self.transport == "stdio" and self.command is None:
            raise ValueError("transport 'stdio' needs 'command'")
        if self.transport in ("streamable-http", "sse") and self.url is None:
            raise ValueError(f"transport {self.transport!r} needs 'url'")
        return self

    @property
    def kind(self) -> str:
        if self.via == "agent":
            return "agent-stdio" if self.transport == "stdio" else "agent"
        if self.command is not None:
            return "stdio"
        return self.transport or "streamable-http"


class AgentServerConfig(_Strict):
    """An MCP server only the agent can reach, with the agent's own secrets for it: a Streamable HTTP ``url``, or
    a stdio ``command`` the agent starts for each session (its environment: an allow-list, ``env_passthrough`` of
    the agent's own variables, and ``env``)."""

    url: str | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    env_passthrough: list[str] = Field(default_factory=list)
    cwd: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header -> environment variable (of the agent) holding its value"
    )
    headers_from_file: dict[str, str] = Field(
        default_factory=dict, description="header -> file (of the agent) holding its value"
    )
    connect_timeout: float = Field(default=10.0, gt=0)
    call_timeout: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> AgentServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'url' (an HTTP server) or 'command' (a stdio server)")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError("'url' must start with http:// or https://")
        return self


class AgentConfig(_Strict):
    """``portcullis agent --config FILE``: where to dial out to, with which token, carrying which servers."""

    gateway: str = Field(description="the gateway's tunnel endpoint, e.g. wss://gateway.example.com/agent/connect")
    token_env: str | None = Field(default="PORTCULLIS_AGENT_TOKEN", description="environment variable with the token")
    token_file: str | None = Field(default=None, description="file holding the token (instead of token_env)")
    servers: dict[Annotated[str, Field(pattern=NAME_RE.pattern)], AgentServerConfig] = Field(min_length=1)
    reconnect_max: float = Field(default=30.0, gt=0, description="the longest wait between reconnects, seconds")
    heartbeat: float = Field(default=10.0, gt=0, description="seconds between pings on the tunnel")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="largest request body carried")

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, v: str) -> str:
        if not re.match(r"^(wss?|https?)://", v):
            raise ValueError("expected a ws://, wss://, http:// or https:// URL of the gateway's /agent/connect")
        return v


class RateLimit(_Strict):
    per_second: float = Field(gt=0, description="requests earned per second")
    burst: int = Field(gt=0, description="requests that may come at once (the bucket's size)")
    concurrent: int | None = Field(default=None, gt=0, description="requests in flight at once (none: no cap)")


class RateConfig(_Strict):
    principal: RateLimit | None = Field(default=None, description="per caller (issuer and subject, or API key)")
    server: RateLimit | None = Field(default=None, description="per upstream server, whoever calls")


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(
        default=8190, ge=1024, le=1024 * 1024, description="the request line and each header line; beyond it, 400"
    )
    max_headers: int = Field(default=128, ge=8, le=10_000, description="headers per request; beyond it, 400")
    keepalive_timeout: float = Field(
        default=75.0, gt=0, le=3600, description="seconds an idle client connection is kept open between requests"
    )
    max_sse_event_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_sessions: int = Field(default=10_000, gt=0)
    stream_buffer_events: int = Field(default=256, gt=0)
    session_idle_timeout: float = Field(default=3600.0, gt=0)
    sessions_per_principal: int | None = Field(
        default=None,
        gt=0,
        description="open sessions one caller may have on a replica (none: only max_sessions); beyond it, 429",
    )
    rate: RateConfig | None = Field(
        default=None, description="rate limits and concurrency caps (none: unlimited); see docs/configuration.md"
    )
    drain_timeout: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="on SIGTERM: seconds in-flight calls get to finish (new ones are refused) before the rest are "
        "cut; keep it below the pod's terminationGracePeriodSeconds",
    )


class PolicyConfig(_Strict):
    file: str | None = Field(default=None, description="policy YAML (docs/policy.md); none: allow every caller")
    reload_interval: float = Field(default=2.0, gt=0, description="seconds between checks of the policy file")


class RecordingConfig(_Strict):
    durability: Literal["commit", "async"] = Field(
        default="commit", description="commit: release a response only after its record is committed"
    )
    signing_key_file: str | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs audit checkpoints (portcullis audit keygen); without it "
        "the chain is kept but not sealed",
    )
    signing_key_env: str | None = Field(
        default=None,
        description="environment variable holding the Ed25519 private key (PEM) instead of signing_key_file (a "
        "Kubernetes Secret mounted as an env var)",
    )
    chain: str | None = Field(
        default=None,
        pattern=NAME_RE.pattern,
        description="this gateway's audit chain; default 'gateway' on SQLite and 'gateway-HOSTNAME' on PostgreSQL "
        "(one chain per replica: a second process on the same chain is refused)",
    )
    checkpoint_every: int = Field(default=1000, gt=0, description="records between signed checkpoints")
    checkpoint_interval: float = Field(default=60.0, gt=0, description="seconds between checkpoints (at most)")
    export: list[ExportSink] = Field(
        default_factory=list,
        description="where committed records (and checkpoints) are also streamed: jsonl files, an OTLP logs "
        "endpoint, a webhook; the store stays the source of truth",
    )
    retention: RetentionConfig | None = Field(
        default=None, description="prune old records up to a checkpoint (the chain stays verifiable)"
    )
    alerts: list[WebhookConfig] = Field(
        default_factory=list,
        description="webhooks told when the recording store fails (traffic is refused) and when it recovers",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> RecordingConfig:
        if self.signing_key_file is not None and self.signing_key_env is not None:
            raise ValueError("give signing_key_file or signing_key_env, not both")
        return self


class ExportCommon(_Strict):
    buffer: int = Field(
        default=10000,
        gt=0,
        le=10_000_000,
        description="records held while the destination is behind or down; beyond this the oldest are dropped "
        "(and counted)",
    )
    checkpoints: bool = Field(default=True, description="also export signed checkpoints (for verifying the copy)")


class JsonlExport(ExportCommon):
    type: Literal["jsonl"]
    path: str = Field(description="file the records are appended to, one JSON object per line")
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0, description="rotate when the file reaches this size")
    keep: int = Field(default=10, ge=1, le=10000, description="rotated files kept (PATH.1 … PATH.N)")
    fsync: bool = Field(default=False, description="fsync after each batch")


class HttpExport(ExportCommon):
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header -> environment variable holding its value"
    )
    timeout: float = Field(default=10.0, gt=0)
    batch: int = Field(default=512, gt=0, le=100000, description="records per request (at most)")
    retry_max: float = Field(default=30.0, gt=0, description="the longest wait between retries, seconds")


class OtlpExport(HttpExport):
    type: Literal["otlp"]
    endpoint: str = Field(description="OTLP/HTTP logs endpoint, e.g. http://collector:4318/v1/logs")

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("expected an http:// or https:// URL")
        return v


class WebhookExport(HttpExport):
    type: Literal["webhook"]
    url: str = Field(description="where batches are POSTed as JSON, or env:VARIABLE holding it")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v.startswith("env:") or re.match(r"^https?://", v):
            return v
        raise ValueError("expected an http:// or https:// URL, or env:VARIABLE holding one")


ExportSink = Annotated[JsonlExport | OtlpExport | WebhookExport, Field(discriminator="type")]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float) -> float:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or plain seconds; ValueError with what was expected."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        t = text.strip().lower()
        try:
            value = float(t[:-1]) * _UNITS[t[-1]] if t and t[-1] in _UNITS else float(t)
        except ValueError:
            raise ValueError(f"expected a duration such as 90d, 12h, 30m or seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError("a duration must be positive")
    return value


class RetentionConfig(_Strict):
    max_age: float | None = Field(
        default=None, description="how long a record is kept (at least): seconds, or 90d / 12h / 30m / 2w"
    )
    max_bytes: int | None = Field(
        default=None, gt=0, description="payload bytes kept in the store (the oldest are pruned first)"
    )
    interval: float = Field(default=3600.0, gt=0, description="seconds between retention passes")

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return v if v is None or isinstance(v, bool) else parse_duration(v)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _some_limit(self) -> RetentionConfig:
        if self.max_age is None and self.max_bytes is None:
            raise ValueError("give max_age or max_bytes (or both)")
        return self


class WebhookConfig(_Strict):
    url: str = Field(
        description="where approval notifications are POSTed, or env:VARIABLE holding it (a Slack webhook URL is "
        "a secret)"
    )
    format: Literal["json", "slack"] = "json"
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header -> environment variable holding its value (e.g. an auth header)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v.startswith("env:"):
            return v
        if not re.match(r"^https?://", v):
            raise ValueError("expected an http:// or https:// URL, or env:VARIABLE holding one")
        return v


class ApprovalsConfig(_Strict):
    ttl: float = Field(default=3600.0, gt=0, description="seconds a pending approval request stays decidable")
    release_window: float = Field(
        default=900.0, gt=0, description="seconds after approval within which the approved call must be retried"
    )
    required: int = Field(default=1, ge=1, le=10, description="distinct approvers needed (a deny by anyone ends it)")
    max_pending_per_principal: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="approval requests one caller may have pending at once; a call held beyond it is refused "
        "(-32013, not asked) until some are decided or expire",
    )
    wait: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="seconds a held call stays open waiting for the decision (then -32011 naming the request); "
        "0: answer at once",
    )
    poll_interval: float = Field(
        default=0.5, gt=0, description="seconds between store checks while waiting (decisions made on other replicas)"
    )
    progress_interval: float = Field(
        default=5.0,
        gt=0,
        description="while a caller waits: seconds between progress notifications (when it gave a progress token)",
    )
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="notified when a request is opened, approved or denied (with retries)"
    )
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff: float = Field(default=0.5, gt=0, le=60, description="seconds before the first retry (doubles)")
    break_glass_groups: list[str] = Field(
        default_factory=list,
        description="members may proceed without approval by sending Portcullis-Break-Glass: <reason>; the call "
        "is recorded as break-glass and awaits an approver's review",
    )


MaskMode = Literal["label", "partial", "pseudonym"]


class MaskProfileConfig(_Strict):
    """Which classes to mask and how (a profile: the top level, per server, or per group)."""

    classes: list[str] | None = Field(
        default=None,
        description="class names, kinds ('secret', 'pii'), custom rule names or 'all'; default: every secret and "
        "PII class except the optional ip_address",
    )
    exclude: list[str] = Field(default_factory=list, description="classes taken out of 'classes'")
    mode: MaskMode | None = Field(default=None, description="label (default), partial or pseudonym")
    modes: dict[str, MaskMode] = Field(default_factory=dict, description="class -> mode, overriding 'mode'")
    unmasked_for: dict[str, list[str]] = Field(
        default_factory=dict, description="class -> groups whose members see that class unmasked"
    )


class MaskOverrideConfig(MaskProfileConfig):
    """A profile for callers in any of ``groups`` (optionally only on ``servers``); the first match wins."""

    groups: list[str] = Field(min_length=1)
    servers: list[str] = Field(default_factory=list)


class CustomMaskRuleConfig(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="the class name, shown in the label")
    pattern: str = Field(description="RE2 pattern; the group named 'secret' (if any) is what gets masked")
    validator: Literal["none", "luhn", "mod97", "credit_card", "us_ssn", "phone", "entropy", "email", "jwt"] = "none"
    kind: Literal["secret", "pii"] = "secret"


class ForensicConfig(_Strict):
    public_key_file: str = Field(
        description="X25519 public key (PEM) that seals an encrypted copy of each unmasked original into the "
        "record; only the holder of the private key can open it (portcullis forensic open)"
    )


class MaskingConfig(MaskProfileConfig):
    enabled: bool = Field(default=True, description="false: no masking at all (a loud warning at start)")
    servers: dict[str, MaskProfileConfig] = Field(default_factory=dict, description="server -> profile")
    overrides: list[MaskOverrideConfig] = Field(default_factory=list)
    rules: list[CustomMaskRuleConfig] = Field(default_factory=list, description="custom detection rules")
    phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$", description="region for national phone numbers")
    pseudonym_key_env: str | None = Field(
        default=None, description="environment variable with the pseudonym key (share it across replicas)"
    )
    forensic: ForensicConfig | None = None
    max_candidates: int = Field(default=50_000, gt=0, description="candidate matches per message before failing closed")
    max_depth: int = Field(default=64, gt=0, le=1000, description="JSON nesting depth before failing closed")


class DefinitionsConfig(_Strict):
    """Pinning of tool, prompt and resource definitions (the ``pin`` stage: rug pulls and tool poisoning)."""

    on_change: Literal["block", "flag"] = Field(
        default="block",
        description="a definition that differs from the accepted one, or holds suspicious text: 'block' hides it "
        "and refuses calls to it until an admin accepts it; 'flag' records it and lets it through",
    )
    scan_defaults: bool = Field(default=True, description="use the built-in patterns for hidden instructions")
    scan: dict[str, str] = Field(
        default_factory=dict, description="more RE2 patterns (name -> pattern) that make a definition suspicious"
    )
    pins: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="server -> {tool name, or 'prompt:NAME' / 'resource:URI': sha256} accepted from the start "
        "(portcullis definitions list shows the digests)",
    )
    refresh: float = Field(default=5.0, gt=0, description="seconds between syncs with the store (other replicas)")

    @field_validator("scan")
    @classmethod
    def _patterns(cls, v: dict[str, str]) -> dict[str, str]:
        import re2  # type: ignore[import-untyped]

        for name, pattern in v.items():
            try:
                re2.compile(pattern)
            except re2.error as exc:
                raise ValueError(f"scan pattern {name!r} is not valid RE2: {exc}") from None
        return v


class TracingConfig(_Strict):
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces; none: tracing off",
    )
    service_name: str = "portcullis"
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="of new traces (a caller's sampled flag wins)")
    headers_from_env: dict[str, str] = Field(default_factory=dict, description="header -> environment variable")

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("expected an http:// or https:// URL")
        return v


class ConsoleConfig(_Strict):
    """The web console's login: the authorization-code flow with PKCE against one of ``auth.issuers``."""

    client_id: str | None = Field(
        default=None, description="the console's OAuth client id at the identity provider (unset: no console login)"
    )
    client_secret_env: str | None = Field(
        default=None,
        description="environment variable holding the client secret, for a confidential client (unset: a public "
        "client, PKCE only)",
    )
    issuer: str | None = Field(
        default=None, description="which of auth.issuers the console logs in with (default: the first)"
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"], min_length=1)
    session_ttl: int = Field(default=8 * 3600, gt=0, le=7 * 86400, description="seconds a console login lasts")


class NetworkConfig(_Strict):
    """Which private or special addresses the gateway may reach through names (docs/security.md, SSRF)."""

    private_hosts: list[str] = Field(
        default_factory=list,
        description="names that may resolve to private, loopback or link-local addresses (an IP written in the "
        "configuration, and localhost, are always allowed)",
    )
    private_ranges: list[str] = Field(
        default_factory=list,
        description="CIDRs the gateway may reach through any name (e.g. the cluster's service range, 10.96.0.0/12)",
    )

    @field_validator("private_ranges")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for r in v:
            try:
                ipaddress.ip_network(r, strict=False)
            except ValueError:
                raise ValueError(f"{r!r} is not a CIDR (like 10.0.0.0/8 or fd00::/8)") from None
        return v


class AdminConfig(_Strict):
    auditor_groups: list[str] = Field(
        default_factory=list,
        description="groups whose members may read sessions, the audit trail, policies, agents and keys through the "
        "admin API and the console (default: nobody)",
    )
    admin_groups: list[str] = Field(
        default_factory=list,
        description="groups whose members may also create and revoke API keys and agent tokens (default: nobody)",
    )
    console: ConsoleConfig = ConsoleConfig()


class Config(_Strict):
    listen: str = "127.0.0.1:8080"
    store: str = "sqlite:///./portcullis.db"
    auth: AuthConfig = AuthConfig(mode="none")
    servers: dict[Annotated[str, Field(pattern=NAME_RE.pattern)], ServerConfig] = Field(default_factory=dict)
    limits: LimitsConfig = LimitsConfig()
    recording: RecordingConfig = RecordingConfig()
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    policy: PolicyConfig = PolicyConfig()
    masking: MaskingConfig = MaskingConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    definitions: DefinitionsConfig = DefinitionsConfig()
    admin: AdminConfig = AdminConfig()
    network: NetworkConfig = NetworkConfig()
    tracing: TracingConfig = TracingConfig()
    pipeline: list[str] = Field(default_factory=lambda: ["record", "bind", "authz", "mask", "pin"])
    public_url: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, port = split_hostport(v)
        if not 0 <= port <= 65535:
            raise ValueError("port must be 0..65535")
        del host
        return v

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        if v.startswith("env:"):  # the URL holds a password: from a Secret, through the environment
            name = v[4:]
            value = os.environ.get(name)
            if not value:
                raise ValueError(f"environment variable {name} (the store URL) is not set")
            v = value
        if not (v.startswith("sqlite:///") or v.startswith("postgresql://") or v.startswith("postgresql+")):
            raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST/DB (or env:VARIABLE holding one)")
        return v

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: list[str]) -> list[str]:
        known = {"record", "bind", "authz", "mask", "pin"}
        for name in v:
            if name not in known:
                raise ValueError(f"unknown stage {name!r}; known stages: {', '.join(sorted(known))}")
        if "record" not in v:
            raise ValueError("the 'record' stage cannot be removed: every message is recorded")
        for mandatory, why in (
            ("authz", "every request gets a policy decision"),
            ("bind", "what is minted for one principal stays theirs"),
            ("mask", "responses are masked before they reach the client (turn it off with masking.enabled: false)"),
        ):
            if mandatory not in v:
                raise ValueError(f"the {mandatory!r} stage cannot be removed: {why}")
        if len(set(v)) != len(v):
            raise ValueError("a stage may appear only once")
        if v.index("record") > v.index("mask"):
            raise ValueError("'mask' must come after 'record': the record keeps what the client saw (masked)")
        if "pin" in v and v.index("pin") < v.index("mask"):
            raise ValueError("'pin' must come after 'mask': it fingerprints what the server listed, before masking")
        return v

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Checks across keys, each with the key path it should be reported at."""
        out: list[tuple[tuple[str, ...], str]] = []
        if self.auth.mode == "none" and not is_loopback(self.host):
            out.append(
                (("auth", "mode"), f"mode 'none' is accepted only on a loopback listen address, not {self.host!r}")
            )
        out.extend(masking_problems(self.masking, set(self.servers)))
        if self.recording.signing_key_file is not None:
            from portcullis.store.audit_keys import load_signer

            try:
                load_signer(self.recording.signing_key_file)
            except OSError as exc:
                out.append((("recording", "signing_key_file"), f"cannot read it: {exc.strerror}"))
            except (ValueError, TypeError) as exc:
                out.append((("recording", "signing_key_file"), f"not an Ed25519 private key in PEM: {exc}"))
        return out

    @property
    def host(self) -> str:
        return split_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        return split_hostport(self.listen)[1]


def split_hostport(v: str) -> tuple[str, int]:
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, sep, port = v.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
    if not port.isdigit():
        raise ValueError("expected HOST:PORT with a numeric port, e.g. 127.0.0.1:8080")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def masking_problems(m: MaskingConfig, servers: set[str]) -> list[tuple[tuple[str, ...], str]]:
    """Class names, modes and custom patterns that cannot work, each at its key path."""
    import re2

    from portcullis.masking.classes import CLASSES, expand

    out: list[tuple[tuple[str, ...], str]] = []
    custom = frozenset(r.name for r in m.rules)
    for i, r in enumerate(m.rules):
        if r.name in CLASSES or r.name in ("secret", "pii", "all"):
            out.append((("masking", "rules", str(i), "name"), f"{r.name!r} is a built-in name; pick another"))
        try:
            rx = re2.compile(r.pattern)
        except re2.error as exc:
            why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            out.append((("masking", "rules", str(i), "pattern"), f"not a valid RE2 pattern: {why}"))
            continue
        if rx.search("") is not None:
            out.append((("masking", "rules", str(i), "pattern"), "the pattern matches the empty string"))
    import phonenumbers

    if m.phone_region not in phonenumbers.SUPPORTED_REGIONS:
        out.append((("masking", "phone_region"), f"{m.phone_region!r} is not a region libphonenumber knows (e.g. GB)"))
    if m.pseudonym_key_env is not None and not os.environ.get(m.pseudonym_key_env):
        out.append((("masking", "pseudonym_key_env"), f"environment variable {m.pseudonym_key_env} is not set"))
    if m.forensic is not None:
        from portcullis.masking.seal import Sealer, SealError

        try:
            Sealer.from_pem(Path(m.forensic.public_key_file).read_bytes())
        except OSError as exc:
            out.append((("masking", "forensic", "public_key_file"), f"cannot read it: {exc.strerror}"))
        except (SealError, ValueError) as exc:
            out.append((("masking", "forensic", "public_key_file"), f"not an X25519 public key in PEM: {exc}"))
    custom_kinds = {r.name: r.kind for r in m.rules}
    profiles: list[tuple[tuple[str, ...], MaskProfileConfig]] = [(("masking",), m)]
    profiles += [(("masking", "servers", k), p) for k, p in m.servers.items()]
    profiles += [(("masking", "overrides", str(i)), p) for i, p in enumerate(m.overrides)]
    known = ", ".join(sorted([*CLASSES, *custom, "secret", "pii", "all"]))
    for path, p in profiles:
        for key, names in (("classes", p.classes or []), ("exclude", p.exclude)):
            try:
                expand(names, custom, custom_kinds)
            except ValueError as exc:
                out.append(((*path, key), f"{exc}; known: {known}"))
        for key, names in (("modes", list(p.modes)), ("unmasked_for", list(p.unmasked_for))):
            for n in names:
                if n not in CLASSES and n not in custom:
                    out.append(((*path, key, n), f"unknown masking class {n!r}; known: {known}"))
    for k in m.servers:
        if k not in servers:
            out.append((("masking", "servers", k), f"no server named {k!r} is configured"))
    for i, o in enumerate(m.overrides):
        for s in o.servers:
            if s not in servers:
                out.append((("masking", "overrides", str(i), "servers"), f"no server named {s!r} is configured"))
    return out
