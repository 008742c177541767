"""Load a YAML policy file into a compiled ``PolicySet``; every problem as ``file:line:col: where: what was expected``.

This is the only module of the policy package that reads files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Final, cast

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from portcullis.errors import ConfigError
from portcullis.policy.expr import ConditionSyntaxError, compile_condition
from portcullis.policy.model import CALL_METHODS, KNOWN_METHODS, LIST_METHODS, USE_METHOD, Effect, Kind, Tier
from portcullis.policy.rules import GlobSet, PolicySet, Rule

MAX_POLICY_BYTES: Final = 4 * 1024 * 1024

_TOP_KEYS: Final = ("version", "default", "description", "rules", "defaults")
_RULE_KEYS: Final = ("id", "description", "allow", "deny", "hold")
_MATCH_KEYS: Final = (
    "users",
    "groups",
    "except_groups",
    "clients",
    "servers",
    "tools",
    "resources",
    "prompts",
    "methods",
    "when",
    "approvers",
    "approvals",
    "all_groups",
)
_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")
_KIND_OF_METHOD: Final[dict[str, Kind]] = {**CALL_METHODS, **LIST_METHODS}


class PolicyError(ConfigError):
    """A policy file is invalid. ``problems`` lists each finding as ``file:line:col: where: what was expected``."""


def load_policy(path: str | os.PathLike[str]) -> PolicySet:
    """Read, validate and compile a YAML policy file. Raises ``PolicyError`` listing every problem found."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError([f"{p}: cannot read the file: {exc.strerror or exc}"]) from exc
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError([f"{p}: the file is larger than {MAX_POLICY_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{p}: not UTF-8 text (byte {exc.start})"]) from exc
    return load_policy_text(text, str(p))


def load_policy_text(text: str, filename: str = "<policy>") -> PolicySet:
    """Validate and compile policy text; ``filename`` is only used in messages and ``PolicySet.source``."""
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark is not None else filename
        raise PolicyError([f"{where}: invalid YAML: {exc.problem or exc.context}"]) from exc
    except Exception as exc:  # ruamel raises a few non-marked errors on odd input
        raise PolicyError([f"{filename}: invalid YAML: {exc}"]) from exc
    return _Builder(filename).build(data)


class _Builder:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[str] = []
        self.ids: dict[str, int] = {}

    def fail(self, node: Any, key: Any, where: str, msg: str, *, value: bool = False) -> None:
        line, col = _position(node, key, value)
        self.problems.append(f"{self.filename}:{line}:{col}: {where}: {msg}")

    def build(self, data: Any) -> PolicySet:
        if not isinstance(data, CommentedMap):
            self.problems.append(f"{self.filename}:1:1: expected a mapping with version, default and rules")
            raise PolicyError(self.problems)
        for k in data:
            if k not in _TOP_KEYS:
                self.fail(data, k, str(k), f"unknown key; expected one of {', '.join(_TOP_KEYS)}")
        version = data.get("version")
        if "version" not in data:
            self.fail(data, None, "version", "required key is missing (version: 1)")
        elif version != 1 or isinstance(version, bool):
            self.fail(data, "version", "version", f"expected 1, got {version!r}", value=True)
        default: Effect = "deny"
        if "default" in data:
            d = data["default"]
            if d in ("allow", "deny", "hold"):
                default = d
            else:
                self.fail(data, "default", "default", f"expected allow, deny or hold, got {d!r}", value=True)
        if "description" in data and not isinstance(data["description"], str):
            self.fail(data, "description", "description", "expected a string", value=True)
        rules = self._tier(data, "rules")
        defaults = self._tier(data, "defaults")
        if self.problems:
            raise PolicyError(self.problems)
        canonical = {
            "version": 1,
            "default": default,
            "rules": [_canonical(r) for r in rules],
            "defaults": [_canonical(r) for r in defaults],
        }
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()[:16]
        return PolicySet(digest, self.filename, default, tuple(rules), tuple(defaults))

    def _tier(self, data: CommentedMap, tier: Tier) -> list[Rule]:
        if tier not in data or data[tier] is None:
            return []
        seq = data[tier]
        if not isinstance(seq, CommentedSeq):
            self.fail(data, tier, tier, "expected a list of rules", value=True)
            return []
        out: list[Rule] = []
        for i, node in enumerate(seq):
            rule = self._rule(seq, i, node, tier)
            if rule is not None:
                out.append(rule)
        return out

    def _rule(self, seq: CommentedSeq, i: int, node: Any, tier: Tier) -> Rule | None:
        where = f"{tier}[{i}]"
        if not isinstance(node, CommentedMap):
            self.fail(seq, i, where, "expected a rule: a mapping with id and one of allow, deny, hold", value=True)
            return None
        ok = True
        rid = node.get("id")
        if "id" not in node:
            self.fail(seq, i, where, "required key id is missing", value=True)
            ok = False
        elif not isinstance(rid, str) or not _ID.match(rid):
            self.fail(
                node,
                "id",
                f"{where}.id",
                "expected an id of letters, digits and _ . : / @ - (at most 128)",
                value=True,
            )
            ok = False
        else:
            where = f"{where} (id {rid})"
            if rid in self.ids:
                self.fail(node, "id", where, f"duplicate id (first used on line {self.ids[rid]})", value=True)
                ok = False
            else:
                self.ids[rid] = _position(node, "id", True)[0]
        for k in node:
            if k not in _RULE_KEYS:
                hint = " (put matchers inside allow/deny/hold)" if k in _MATCH_KEYS else ""
                self.fail(node, k, f"{where}.{k}", f"unknown key; expected one of {', '.join(_RULE_KEYS)}{hint}")
                ok = False
        description = node.get("description", "")
        if not isinstance(description, str):
            self.fail(node, "description", f"{where}.description", "expected a string", value=True)
            ok = False
        effects = [e for e in ("allow", "deny", "hold") if e in node]
        if len(effects) != 1:
            msg = "expected exactly one of allow, deny, hold" + (f" (found {', '.join(effects)})" if effects else "")
            self.fail(seq, i, where, msg, value=True)
            return None
        effect = cast(Effect, effects[0])
        body = node[effect]
        if body is None:
            body = CommentedMap()
        if not isinstance(body, CommentedMap):
            self.fail(node, effect, f"{where}.{effect}", "expected a mapping of matchers (or {} for any)", value=True)
            return None
        m: dict[str, Any] = {}
        for k in body:
            if k not in _MATCH_KEYS:
                self.fail(body, k, f"{where}.{effect}.{k}", f"unknown key; expected one of {', '.join(_MATCH_KEYS)}")
                ok = False
                continue
            if k == "when":
                continue
            if k == "approvals":
                n = body[k]
                if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
                    self.fail(body, k, f"{where}.{effect}.{k}", "expected a whole number from 1 to 10", value=True)
                    ok = False
                m[k] = n
                continue
            if k == "all_groups":
                if not isinstance(body[k], bool):
                    self.fail(body, k, f"{where}.{effect}.{k}", "expected true or false", value=True)
                    ok = False
                m[k] = body[k]
                continue
            values = self._strings(body, k, f"{where}.{effect}.{k}")
            if values is None:
                ok = False
            else:
                m[k] = values
        for k in ("approvers", "approvals", "all_groups"):
            if k in m and effect != "hold":
                self.fail(body, k, f"{where}.{effect}.{k}", f"{k} are only for hold rules")
                ok = False
        for k in ("methods",):
            for v in m.get(k, ()):
                if v not in KNOWN_METHODS:
                    self.fail(
                        body,
                        k,
                        f"{where}.{effect}.{k}",
                        f"unknown method {v!r}; expected MCP methods such as {', '.join(sorted(_KIND_OF_METHOD))}",
                        value=True,
                    )
                    ok = False
        if ok and "methods" in m and any(s in m for s in ("tools", "resources", "prompts")):
            kinds = {_KIND_OF_METHOD.get(x) for x in m["methods"]}
            named: set[Kind] = {"tool"} if "tools" in m else set()
            named |= {"resource", "resource_template"} if "resources" in m else set()
            named |= {"prompt"} if "prompts" in m else set()
            if not kinds & named:
                self.fail(
                    body,
                    "methods",
                    f"{where}.{effect}.methods",
                    "the rule can never apply: none of these methods uses the tools/resources/prompts it names "
                    f"(e.g. {', '.join(USE_METHOD[k] for k in sorted(named))})",
                    value=True,
                )
                ok = False
        condition = None
        if "when" in body:
            src = body["when"]
            try:
                condition = compile_condition(src, annotations=(tier == "defaults"))
            except ConditionSyntaxError as exc:
                at = f" (column {exc.column} of the expression)" if exc.column else ""
                self.fail(body, "when", f"{where}.{effect}.when", exc.message + at, value=True)
                ok = False
        if not ok:
            return None
        users = m.get("users")
        return Rule(
            id=rid,
            effect=effect,
            tier=tier,
            line=_position(seq, i, True)[0],
            description=description,
            users=None if users is None else frozenset(users) | frozenset(u.lower() for u in users if "@" in u),
            groups=_set(m, "groups"),
            except_groups=_set(m, "except_groups"),
            clients=_set(m, "clients"),
            servers=_globs(m, "servers"),
            tools=_globs(m, "tools"),
            resources=_globs(m, "resources"),
            prompts=_globs(m, "prompts"),
            methods=_set(m, "methods"),
            condition=condition,
            approvers=tuple(m.get("approvers", ())),
            approvals=m.get("approvals"),
            all_groups=bool(m.get("all_groups", False)),
        )

    def _strings(self, body: CommentedMap, key: str, where: str) -> list[str] | None:
        v = body[key]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            self.fail(body, key, where, "expected a list of strings", value=True)
            return None
        if not v:
            self.fail(body, key, where, "an empty list matches nothing; leave the key out to match any", value=True)
            return None
        out: list[str] = []
        for j, item in enumerate(v):
            if not isinstance(item, str) or not item:
                node = v if isinstance(v, CommentedSeq) else body
                self.fail(node, j if node is v else key, f"{where}[{j}]", "expected a non-empty string", value=True)
                return None
            out.append(item)
        return out


def _set(m: dict[str, Any], key: str) -> frozenset[str] | None:
    v = m.get(key)
    return None if v is None else frozenset(v)


def _globs(m: dict[str, Any], key: str) -> GlobSet | None:
    v = m.get(key)
    return None if v is None else GlobSet(tuple(v))


def _canonical(r: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "effect": r.effect, "description": r.description}
    for k in ("users", "groups", "except_groups", "clients", "methods"):
        v = getattr(r, k)
        if v is not None:
            out[k] = sorted(v)
    for k in ("servers", "tools", "resources", "prompts"):
        g = getattr(r, k)
        if g is not None:
            out[k] = sorted(g.patterns)
    if r.condition is not None:
        out["when"] = r.condition.source
    if r.approvers:
        out["approvers"] = list(r.approvers)
    if r.approvals is not None:
        out["approvals"] = r.approvals
    if r.all_groups:
        out["all_groups"] = True
    return out


def _position(node: Any, key: Any, value: bool) -> tuple[int, int]:
    """1-based line and column of ``node[key]`` (its value if ``value``), else of ``node`` itself."""
    try:
        if key is None:
            return node.lc.line + 1, node.lc.col + 1
        if isinstance(node, CommentedSeq):
            ln, cl = node.lc.item(key)
        elif value:
            ln, cl = node.lc.value(key)
        else:
            ln, cl = node.lc.key(key)
        return ln + 1, cl + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        try:
            return node.lc.line + 1, node.lc.col + 1
        except AttributeError:
            return 1, 1
