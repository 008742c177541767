"""Conditions: CEL expressions (the ``when`` of a rule), type-checked when the policy loads.

The engine is ``cel-expr-python`` (Google's CEL C++ runtime). Every name a condition may use is declared with its
type, so a misspelt variable, an unknown function or a wrong operand type is a load error, not a surprise at call
time. What is left for run time (a missing argument, an argument of the wrong type, a bad regular expression) comes
back as a CEL error value, which the engine turns into deny.

Besides compiling, this module reads a condition's tokens to learn which variables it references (to build only
those for an evaluation, and to know which conditions depend on arguments that a list filter cannot know) and, when
every use of ``arguments`` names a literal key, which keys it reads (only those are converted and passed to CEL).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import re2  # type: ignore[import-untyped]
from cel_expr_python import cel  # type: ignore[import-untyped]
from cel_expr_python.ext import ext_strings  # type: ignore[import-untyped]

from portcullis.policy.model import ANNOTATION_DEFAULTS

# Bounds on what a condition may be handed: arguments beyond them make the condition fail (and so the call is denied).
MAX_DEPTH: Final = 32
MAX_NODES: Final = 10_000
MAX_STRING_CHARS: Final = 1_000_000
MAX_CONDITION_CHARS: Final = 4_096

# Top-level names a condition may reference.
NAMES: Final = frozenset({"principal", "server", "method", "target", "arguments", "annotations"})


class ConditionSyntaxError(Exception):
    """A condition that does not compile. ``column`` is 1-based within the expression, when CEL says."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class ConditionError(Exception):
    """A condition that could not be evaluated for one request (the decision becomes deny)."""


# ---------------------------------------------------------------------------------------------------------------
# The CEL environments


def _norm_path(path: str) -> str:
    """Lexical POSIX normalisation: collapse ``//``, ``.`` and ``..`` (no filesystem access, no symlinks)."""
    if not path:
        return path
    out = posixpath.normpath(path)
    if out.startswith("//"):  # POSIX keeps a leading '//' as implementation-defined; we do not
        out = "/" + out.lstrip("/")
    return out


def _path_within(path: str, directory: str) -> bool:
    """True if ``path``, normalised, is ``directory`` or below it. Relative paths are never within an absolute one."""
    p = _norm_path(path)
    d = _norm_path(directory)
    if d == "/":
        return p.startswith("/")
    return p == d or p.startswith(d + "/")


# Regular expressions. CEL's ``matches`` is RE2; the CEL runtime recompiles the pattern on every evaluation
# (8-25 µs), so conditions call the same RE2, compiled once, through this function instead: the loader rewrites
# ``matches(`` to ``rxMatch(`` (same length, so columns in messages still point at the user's text) and checks
# every literal pattern when the policy loads.
REGEX_FN: Final = "rxMatch"
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_REGEX_CACHE: dict[str, Any] = {}
_REGEX_CACHE_MAX: Final = 1024


def regex_problem(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern``, or ``None``."""
    try:
        re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else exc
        return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return None


def _regex_matches(text: str, pattern: str) -> bool:
    """RE2 partial match (CEL ``matches`` semantics), the compiled pattern cached."""
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        problem = regex_problem(pattern)
        if problem is not None:
            raise ValueError(f"invalid regular expression: {problem}")
        rx = re2.Set.SearchSet(_RE2_OPTIONS)
        rx.Add(pattern)
        rx.Compile()
        if len(_REGEX_CACHE) >= _REGEX_CACHE_MAX:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = rx
    return rx.Match(text) is not None


_T = cel.Type
_STR = _T.STRING
_BOOL = _T.BOOL
_BASE_VARS: Final[dict[str, Any]] = {
    "principal.subject": _STR,
    "principal.email": _STR,
    "principal.groups": _T.List(_STR),
    "principal.client_id": _STR,
    "principal.kind": _STR,
    "server": _STR,
    "method": _STR,
    "target": _STR,
    "arguments": _T.Map(_STR, _T.DYN),
}
_ANNOTATION_VARS: Final[dict[str, Any]] = {f"annotations.{k}": _BOOL for k in ANNOTATION_DEFAULTS}
_ALL_VARS: Final = frozenset(_BASE_VARS) | frozenset(_ANNOTATION_VARS)
_QUALIFIED: Final[dict[str, tuple[str, ...]]] = {
    "principal": tuple(v for v in _BASE_VARS if v.startswith("principal.")),
    "annotations": tuple(_ANNOTATION_VARS),
}

_FUNCTIONS: Final = [
    cel.FunctionDecl(
        "normPath", [cel.Overload("normPath_string", return_type=_STR, parameters=[_STR], impl=_norm_path)]
    ),
    cel.FunctionDecl(
        "pathWithin",
        [cel.Overload("pathWithin_string_string", return_type=_BOOL, parameters=[_STR, _STR], impl=_path_within)],
    ),
    cel.FunctionDecl(
        REGEX_FN,
        [
            cel.Overload(
                "rxMatch_string_string",
                return_type=_BOOL,
                parameters=[_STR, _STR],
                is_member=True,
                impl=_regex_matches,
            ),
            cel.Overload(
                "rxMatch_global_string_string", return_type=_BOOL, parameters=[_STR, _STR], impl=_regex_matches
            ),
        ],
    ),
]

_ENVS: dict[bool, Any] = {}


def _env(with_annotations: bool) -> Any:
    env = _ENVS.get(with_annotations)
    if env is None:
        variables = dict(_BASE_VARS)
        if with_annotations:
            variables.update(_ANNOTATION_VARS)
        env = cel.NewEnv(variables=variables, extensions=[ext_strings.ExtStrings()], functions=_FUNCTIONS)
        _ENVS[with_annotations] = env
    return env


# ---------------------------------------------------------------------------------------------------------------
# Tokens: which names a condition references, which argument keys it reads

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*)
  | (?P<raw>(?:[bB]?[rR]|[rR][bB])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*'))
  | (?P<str>[bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
                |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<num>\.?\d[\w.]*(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>.)
    """,
    re.VERBOSE,
)
_SIMPLE_STRING = re.compile(r"""^(?:"([^"\\\n]*)"|'([^'\\\n]*)')$""")


def _tokens(source: str, positions: list[int] | None = None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or "punct"
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
        if positions is not None:
            positions.append(m.start())
    return out


def _rewrite_regex_calls(source: str) -> str:
    """``matches(`` -> ``rxMatch(`` outside strings and comments."""
    positions: list[int] = []
    toks = _tokens(source, positions)
    out = source
    for i, (kind, text) in enumerate(toks):
        if kind == "ident" and text == "matches" and toks[i + 1 : i + 2] == [("punct", "(")]:
            at = positions[i]
            out = out[:at] + REGEX_FN + out[at + len(text) :]
    return out


def analyse(source: str) -> tuple[frozenset[str], frozenset[str], frozenset[str] | None]:
    """What ``source`` reads: the top-level names, the declared variables (``principal.groups``...) and the
    argument keys (``None``: it may read any).

    Conservative: a name is counted whenever it appears as an identifier not after a ``.``; ``principal`` and
    ``annotations`` without a field after them count as all their fields; keys are only narrowed when every such use
    of ``arguments`` is ``arguments.KEY`` or ``arguments["KEY"]`` (and not a method call).
    """
    toks = _tokens(source)
    refs: set[str] = set()
    variables: set[str] = set()
    keys: set[str] = set()
    narrow = True
    for i, (kind, text) in enumerate(toks):
        if kind == "punct" and text in "\"'\\`":
            narrow = False  # something our tokenizer did not understand: never narrow
            continue
        if kind != "ident" or text not in NAMES:
            continue
        if i > 0 and toks[i - 1] == ("punct", "."):
            continue
        refs.add(text)
        nxt = toks[i + 1 : i + 4]
        field = nxt[1][1] if len(nxt) >= 2 and nxt[0] == ("punct", ".") and nxt[1][0] == "ident" else None
        if text in _QUALIFIED:
            qualified = f"{text}.{field}"
            if field is not None and qualified in _ALL_VARS:
                variables.add(qualified)
            else:
                variables.update(_QUALIFIED[text])
            continue
        variables.add(text)
        if text != "arguments" or not narrow:
            continue
        if field is not None:
            if len(nxt) >= 3 and nxt[2] == ("punct", "("):
                narrow = False  # arguments.size(), arguments.exists(...): the whole map
            else:
                keys.add(field)
        elif len(nxt) == 3 and nxt[0] == ("punct", "[") and nxt[1][0] == "str" and nxt[2] == ("punct", "]"):
            m = _SIMPLE_STRING.match(nxt[1][1])
            if m is None:
                narrow = False
            else:
                keys.add(m.group(1) if m.group(1) is not None else m.group(2))
        else:
            narrow = False
    return frozenset(refs), frozenset(variables), (frozenset(keys) if narrow else None)


def regex_literals(source: str) -> list[str]:
    """The literal patterns of ``x.matches("...")`` / ``matches(x, "...")`` calls (checked when the policy loads)."""
    toks = _tokens(source)
    out: list[str] = []
    for i, (kind, text) in enumerate(toks):
        if kind != "ident" or text != "matches" or toks[i + 1 : i + 2] != [("punct", "(")]:
            continue
        member = i > 0 and toks[i - 1] == ("punct", ".")
        j = i + 2
        if not member:  # matches(subject, "pattern"): skip the subject if it is one simple token
            if toks[j + 1 : j + 2] != [("punct", ",")]:
                continue
            j += 2
        if j + 1 < len(toks) and toks[j][0] in ("str", "raw") and toks[j + 1] == ("punct", ")"):
            out.append(toks[j][1])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Compiled conditions


_CEL_LOC = re.compile(r"<input>:(\d+):(\d+): (.*)")


def _compile_error(exc: Exception) -> ConditionSyntaxError:
    text = str(exc)
    m = _CEL_LOC.search(text)
    if m is None:
        return ConditionSyntaxError(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    msg = m.group(3).strip()
    msg = msg.replace(" (in container '')", "").replace(REGEX_FN, "matches")
    return ConditionSyntaxError(msg, int(m.group(2)))


@dataclass(frozen=True, slots=True, eq=False)
class Condition:
    """A compiled, type-checked boolean CEL expression."""

    source: str
    refs: frozenset[str]  # top-level names it reads: principal, server, method, target, arguments, annotations
    variables: tuple[str, ...]  # the declared variables it reads (principal.groups, arguments, ...)
    arg_keys: frozenset[str] | None  # the argument keys it reads; None: any
    expr: Any

    def evaluate(self, data: Mapping[str, Any]) -> bool:
        """True or False; raises ``ConditionError`` for anything else (CEL errors, unconvertible data)."""
        try:
            value = self.expr.eval(data=data).value()
        except Exception as exc:  # the binding raises for data it cannot convert
            raise ConditionError(_clean(str(exc) or type(exc).__name__)) from exc
        if value is True or value is False:
            return value
        raise ConditionError(_clean(str(value)))


def _clean(msg: str) -> str:
    msg = msg.strip().splitlines()[0] if msg.strip() else "error"
    msg = msg.replace(REGEX_FN, "matches")
    for prefix in ("NOT_FOUND: ", "INVALID_ARGUMENT: ", "UNKNOWN: ", "OUT_OF_RANGE: "):
        msg = msg.removeprefix(prefix)
    if msg.startswith("Key not found in map : "):
        msg = "no argument " + msg.removeprefix("Key not found in map : ")
    return msg


def compile_condition(source: str, *, annotations: bool) -> Condition:
    """Compile and type-check ``source``. ``annotations`` declares ``annotations.*`` (the ``defaults`` tier only)."""
    if not isinstance(source, str) or not source.strip():
        raise ConditionSyntaxError("expected a CEL expression (a non-empty string)")
    if len(source) > MAX_CONDITION_CHARS:
        raise ConditionSyntaxError(f"expression longer than {MAX_CONDITION_CHARS} characters")
    refs, variables, keys = analyse(source)
    if not annotations and "annotations" in refs:
        raise ConditionSyntaxError(
            "annotations may only be used in the `defaults` rules: they are hints from the upstream server "
            "and never override an explicit rule"
        )
    env = _env(annotations)
    for literal in regex_literals(source):
        try:
            pattern = env.compile(literal).eval().value()
        except Exception as exc:  # pragma: no cover - a literal the tokenizer took for a string but CEL did not
            raise _compile_error(exc) from exc
        problem = regex_problem(pattern) if isinstance(pattern, str) else "the pattern is not a string"
        if problem is not None:
            raise ConditionSyntaxError(f"invalid regular expression {literal}: {problem}")
    try:
        expr = env.compile(_rewrite_regex_calls(source))
    except Exception as exc:
        raise _compile_error(exc) from exc
    rtype = expr.return_type()
    if rtype != _BOOL and rtype != _T.DYN:
        raise ConditionSyntaxError(f"expected a boolean expression, this one gives {rtype.name().lower()}")
    return Condition(source, refs, tuple(sorted(variables)), keys, expr)


# ---------------------------------------------------------------------------------------------------------------
# Arguments and annotations handed to CEL


def bounded(value: Any) -> Any:
    """``value`` as plain JSON-like data CEL accepts, or ``ConditionError`` if it is too deep, too big or not data.

    Iterative (no recursion on hostile input). Mappings other than ``dict`` and tuples are copied to dict/list.
    """
    t = type(value)
    if t is str:  # the common case: one short string
        if len(value) > MAX_STRING_CHARS:
            raise ConditionError(f"arguments too large (more than {MAX_STRING_CHARS} characters)")
        return value
    if value is None or t is bool or t is int or t is float:
        return value
    nodes = 0
    chars = 0
    copy_needed = False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConditionError(f"arguments too large (more than {MAX_NODES} values)")
        if isinstance(v, str):
            chars += len(v)
            if chars > MAX_STRING_CHARS:
                raise ConditionError(f"arguments too large (more than {MAX_STRING_CHARS} characters)")
        elif v is None or isinstance(v, bool | int | float):
            continue
        elif isinstance(v, Mapping):
            if depth >= MAX_DEPTH:
                raise ConditionError(f"arguments nested deeper than {MAX_DEPTH}")
            if type(v) is not dict:
                copy_needed = True
            for k, item in v.items():
                if not isinstance(k, str):
                    raise ConditionError("arguments: a map key is not a string")
                chars += len(k)
                stack.append((item, depth + 1))
            if chars > MAX_STRING_CHARS:
                raise ConditionError(f"arguments too large (more than {MAX_STRING_CHARS} characters)")
        elif isinstance(v, list | tuple):
            if depth >= MAX_DEPTH:
                raise ConditionError(f"arguments nested deeper than {MAX_DEPTH}")
            if type(v) is not list:
                copy_needed = True
            stack.extend((item, depth + 1) for item in v)
        else:
            raise ConditionError(f"arguments: a value of type {type(v).__name__} is not JSON data")
    return _plain(value) if copy_needed else value


def _plain(v: Any) -> Any:
    # only called on data bounded() accepted: depth <= MAX_DEPTH, so recursion is bounded
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def annotation_values(annotations: Mapping[str, Any] | None) -> dict[str, bool]:
    """The ``annotations.*`` variables: each hint the tool gave as a boolean, else the MCP default."""
    out = {f"annotations.{k}": d for k, d in ANNOTATION_DEFAULTS.items()}
    if annotations:
        for k in ANNOTATION_DEFAULTS:
            v = annotations.get(k)
            if isinstance(v, bool):  # anything else (a string "true", a number) is ignored: the default stands
                out[f"annotations.{k}"] = v
    return out
