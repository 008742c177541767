from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.config import load_config, load_config_text
from portcullis.errors import ConfigError

BRIEF_EXAMPLE = """\
listen: 127.0.0.1:8080
store: sqlite:///./portcullis.db
auth: {mode: none}          # accepted only on a loopback listen address
servers:
  everything:
    command: [npx, -y, "@modelcontextprotocol/server-everything"]
    env: {SOME_KEY: value}
  fixture:
    url: http://127.0.0.1:3301/mcp
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "gw.yaml")
    return exc.value.problems


def test_the_documented_shape_loads() -> None:
    cfg = load_config_text(BRIEF_EXAMPLE)
    assert cfg.port == 8080 and cfg.servers["everything"].kind == "stdio"
    assert cfg.servers["fixture"].kind == "streamable-http" and cfg.servers["everything"].env == {"SOME_KEY": "value"}


def test_unknown_key_names_file_line_and_key() -> None:
    assert problems("listen: 127.0.0.1:1\nservers:\n  a:\n    url: http://x/\n    tmeout: 3\n") == [
        "gw.yaml:5:5: servers.a.tmeout: unknown key (check the spelling; see docs/configuration.md)"
    ]


def test_wrong_types_and_missing_choice() -> None:
    out = problems("servers:\n  a:\n    env: {}\n  b:\n    url: ftp://x\n")
    assert out[0].startswith("gw.yaml:2:3: servers.a: give exactly one of 'command'")
    assert out[1].startswith("gw.yaml:4:3: servers.b: 'url' must start with http://")


def test_auth_none_needs_loopback() -> None:
    assert problems("listen: 0.0.0.0:80\nauth:\n  mode: none\n") == [
        "gw.yaml:3:3: auth.mode: mode 'none' is accepted only on a loopback listen address, not '0.0.0.0'"
    ]


def test_bad_listen_and_store() -> None:
    out = problems("listen: nowhere\nstore: mysql://x\n")
    assert out[0].startswith("gw.yaml:1:1: listen: expected HOST:PORT")
    assert out[1].startswith("gw.yaml:2:1: store: expected sqlite:///PATH or postgresql://")


def test_invalid_yaml_has_a_position() -> None:
    assert problems("servers: [\n")[0].startswith("gw.yaml:2:1: invalid YAML")


def test_record_stage_cannot_be_removed() -> None:
    assert "cannot be removed" in problems("pipeline: []\n")[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read the file" in exc.value.problems[0]


def test_the_store_url_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from portcullis.config import load_config_text

    monkeypatch.setenv("PCL_STORE", "postgresql://portcullis:pw@db:5432/portcullis")
    assert load_config_text("store: env:PCL_STORE\n").store == "postgresql://portcullis:pw@db:5432/portcullis"
    monkeypatch.delenv("PCL_STORE")
    with pytest.raises(ConfigError, match=r"environment variable PCL_STORE \(the store URL\) is not set"):
        load_config_text("store: env:PCL_STORE\n", "gw.yaml")
