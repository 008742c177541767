"""Load YAML with line numbers and turn validation errors into ``file:line:col: key: what was expected``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from portcullis.config.model import AgentConfig, Config
from portcullis.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_config(path: str | os.PathLike[str]) -> Config:
    return load_config_text(_read(path), str(path))


def load_agent_config(path: str | os.PathLike[str]) -> AgentConfig:
    """The agent's own file (``portcullis agent --config``), checked with the same precise errors."""
    return load_model_text(_read(path), str(path), AgentConfig)


def _read(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the file: {exc.strerror or exc}"]) from exc


def load_config_text(text: str, filename: str = "<config>") -> Config:
    return load_model_text(text, filename, Config)


def load_model_text(text: str, filename: str, model: type[M]) -> M:
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark is not None else filename
        raise ConfigError([f"{where}: invalid YAML: {exc.problem}"]) from exc
    if data is None:
        data = CommentedMap()
    if not isinstance(data, dict):
        raise ConfigError([f"{filename}:1:1: expected a mapping of settings at the top level"])
    try:
        config = model.model_validate(_plain(data))
    except ValidationError as exc:
        raise ConfigError([_describe(filename, data, err) for err in exc.errors()]) from exc
    problems = config.problems() if isinstance(config, Config) else []
    if problems:
        lines = []
        for path, msg in problems:
            line, col, _ = _locate(data, path)
            lines.append(f"{filename}:{line}:{col}: {'.'.join(path)}: {msg}")
        raise ConfigError(lines)
    return config


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _describe(filename: str, root: Any, err: Any) -> str:
    loc = tuple(err["loc"])
    # drop pydantic's synthetic loc parts (validator names) that are not keys
    line, col, path = _locate(root, loc)
    key = ".".join(str(p) for p in path) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/configuration.md)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    msg = msg.removeprefix("Value error, ")
    return f"{filename}:{line}:{col}: {key}: {msg}"


def _locate(root: Any, loc: tuple[Any, ...]) -> tuple[int, int, list[Any]]:
    node = root
    line, col = 1, 1
    path: list[Any] = []
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            try:
                ln, cl = node.lc.key(part)
                line, col = ln + 1, cl + 1
            except (KeyError, TypeError):
                pass
            path.append(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            try:
                ln, cl = node.lc.item(part)
                line, col = ln + 1, cl + 1
            except (KeyError, TypeError):
                pass
            path.append(part)
            node = node[part]
        elif isinstance(node, CommentedMap) and isinstance(part, str) and part.startswith("[key]"):
            continue
        else:
            if isinstance(part, str) and not part.startswith("function-"):
                path.append(part)
            break
    return line, col, path
