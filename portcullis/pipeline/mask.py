"""The masking stage: secrets and PII in everything the upstream sends are replaced before the client sees it.

It runs on the way out, before the recording stage (which comes first in the order and so last on the way out):
the record keeps what the client saw, plus which classes were masked where, plus — if a forensic key is configured —
the unmasked original sealed to that key. Responses (results and errors), notifications (log messages, progress)
and server→client requests (sampling, elicitation) are masked one message at a time, so an SSE stream is masked
event by event. What the caller gets masked depends on the server and the caller's groups (``masking`` in the
config). A message that cannot be masked within bounds is blocked (fail closed). No I/O.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import re2  # type: ignore[import-untyped]

from portcullis import errors
from portcullis.config.model import MaskingConfig, MaskProfileConfig
from portcullis.flow import Direction, Flow
from portcullis.masking import validators
from portcullis.masking.classes import DEFAULT_ON, expand
from portcullis.masking.engine import MaskingError
from portcullis.masking.masker import Masker, Override, Profile
from portcullis.masking.rules import BUILTIN, Rule
from portcullis.masking.seal import Sealer
from portcullis.pipeline.base import Stage
from portcullis.wire.jsonrpc import Kind, Message

log = logging.getLogger("portcullis.mask")
NO_GROUPS: frozenset[str] = frozenset()


class MaskStage(Stage):
    name = "mask"

    def __init__(self, masker: Masker | None, sealer: Sealer | None = None) -> None:
        self.masker = masker
        self.sealer = sealer

    def on_response(self, flow: Flow) -> None:
        resp = flow.response
        if self.masker is None or resp is None or flow.direction is not Direction.C2S:
            return
        self._mask(flow, resp, "result" if resp.kind is Kind.RESULT else "error")

    def on_server_message(self, flow: Flow) -> None:
        if self.masker is None:
            return
        msg = flow.request
        part = "params" if msg.kind in (Kind.REQUEST, Kind.NOTIFICATION) else "result"
        if msg.kind is Kind.ERROR:
            part = "error"
        self._mask(flow, msg, part)

    def _mask(self, flow: Flow, msg: Message, part: str) -> None:
        assert self.masker is not None
        caller = flow.caller
        groups = caller.principal.groups if caller is not None else NO_GROUPS
        plan = self.masker.plan(flow.server, groups)
        if not plan.classes:
            return
        body = msg.body
        original = msg.raw
        try:
            result = self.masker.mask(body, part, plan, flow.session_id, caller.key if caller is not None else None)
        except MaskingError as exc:
            if msg is flow.response:  # the client gets a precise error instead of the response; nothing leaks
                flow.fail(errors.STAGE_FAILED, f"Response blocked: it could not be masked ({exc})", by=self.name)
                flow.masked = None
                return
            raise MaskingFailed(str(exc)) from None
        if not result.changed:
            return
        msg.replace(body)
        flow.masked = result.masked
        if self.sealer is not None:
            flow.sealed = self.sealer.seal(original)


class MaskingFailed(Exception):
    """The message could not be masked; the pipeline blocks it (its message names no content)."""


def mask_class_names(cfg: MaskingConfig) -> frozenset[str]:
    """Every class the mask stage can report: the built-in ones and the configured rules (metrics labels)."""
    from portcullis.masking.classes import DEFAULT_ON, OPTIONAL

    return DEFAULT_ON | OPTIONAL | {r.name for r in cfg.rules}


def build_masker(cfg: MaskingConfig) -> Masker | None:
    if not cfg.enabled:
        log.warning("masking is DISABLED (masking.enabled: false): responses reach clients unmasked")
        return None
    kinds = {r.name: r.kind for r in cfg.rules}
    custom = tuple(_custom_rule(r.name, r.pattern, r.validator) for r in cfg.rules)
    base = _profile(cfg, None, kinds)
    servers = {name: _profile(p, base, kinds) for name, p in cfg.servers.items()}
    overrides = [Override(frozenset(o.groups), frozenset(o.servers), _profile(o, base, kinds)) for o in cfg.overrides]
    key = b""
    if cfg.pseudonym_key_env:
        value = os.environ.get(cfg.pseudonym_key_env)
        if not value:
            raise ValueError(f"masking.pseudonym_key_env: environment variable {cfg.pseudonym_key_env} is not set")
        key = value.encode()
    else:
        key = os.urandom(32)  # consistent within this process; set pseudonym_key_env to share it across replicas
    return Masker(
        base, servers, overrides, custom, key, cfg.max_candidates, cfg.max_depth, builtin=_builtin(cfg.phone_region)
    )


def build_sealer(cfg: MaskingConfig) -> Sealer | None:
    if cfg.forensic is None:
        return None
    return Sealer.from_pem(Path(cfg.forensic.public_key_file).read_bytes())


def _profile(p: MaskProfileConfig, base: Profile | None, kinds: Mapping[str, str]) -> Profile:
    custom = frozenset(kinds)
    if p.classes is not None:
        classes = expand(p.classes, custom, kinds)
    elif base is not None:
        classes = base.classes
    else:
        classes = DEFAULT_ON | custom
    classes -= expand(p.exclude, custom, kinds)
    modes: dict[str, str] = dict(base.modes) if base is not None else {}
    modes.update(p.modes)
    unmasked: dict[str, frozenset[str]] = dict(base.unmasked_for) if base is not None else {}
    unmasked.update({c: frozenset(g) for c, g in p.unmasked_for.items()})
    mode = p.mode or (base.mode if base is not None else "label")
    return Profile(classes=frozenset(classes), mode=mode, modes=modes, unmasked_for=unmasked)


def _custom_rule(name: str, pattern: str, validator: str) -> Rule:
    group = re2.compile(pattern).groupindex.get("secret", 0)
    fn = validators.PhoneValidator() if validator == "phone" else validators.NAMED[validator]
    return Rule(name, pattern, group, None if validator == "none" else fn)


# national numbers outside North America mostly start with a trunk 0: "020 7946 0958", "030 12345678", "06 12 34 56 78"
NATIONAL_PHONE = r"(?:^|[^0-9A-Za-z+\-_.:/])(\(?0[0-9]{1,5}\)?(?:[ .\-]?[0-9]{2,5}){1,4})(?:[^0-9A-Za-z\-_/:]|$)"


def _builtin(region: str) -> tuple[Rule, ...]:
    """The built-in rules, with national phone numbers read in the configured region."""
    if region == "US":
        return BUILTIN
    phone = validators.PhoneValidator(region)
    rules = [Rule(r.cls, r.pattern, r.group, phone, r.extract) if r.cls == "phone_number" else r for r in BUILTIN]
    rules.append(Rule("phone_number", NATIONAL_PHONE, 1, phone))
    return tuple(rules)
