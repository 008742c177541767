"""PolicyStore: reload without a restart; a broken file is refused and the last good policy stays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from portcullis.policy import PolicyError, PolicyRequest, PolicyStore, Principal

GOOD = "version: 1\nrules:\n  - {id: allow-t, allow: {tools: [t]}}\n"
GOOD2 = "version: 1\nrules:\n  - {id: deny-t, deny: {tools: [t]}}\n"
BROKEN = "version: 1\nrules:\n  - {id: oops, allow: {tools: [t], when: 'arguments.x =='}}\n"
REQ = PolicyRequest(Principal("u"), "s", "tools/call", "t")


def write(path: Path, text: str) -> None:
    """Write and move the mtime forward, so a change is seen even on coarse-mtime filesystems."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    st = path.stat()
    if st.st_mtime_ns <= before:
        os.utime(path, ns=(st.st_atime_ns, before + 1_000_000))


def test_first_load_must_succeed(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(BROKEN)
    with pytest.raises(PolicyError) as info:
        PolicyStore(f)
    assert info.value.problems[0].startswith(f"{f}:3:")
    with pytest.raises(PolicyError, match="cannot read"):
        PolicyStore(tmp_path / "missing.yaml")


def test_reload_swaps_in_a_good_file_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    store = PolicyStore(f)
    v1 = store.version
    assert store.engine.decide(REQ).rule == "allow-t"

    write(f, BROKEN)
    res = store.reload()
    assert not res.ok and not res.changed and res.version == v1
    assert res.problems[0].startswith(f"{f}:3:") and "oops" in res.problems[0]
    assert store.last_problems == res.problems
    assert store.engine.decide(REQ).rule == "allow-t"  # still in force

    write(f, GOOD2)
    res = store.reload()
    assert res.ok and res.changed and res.previous_version == v1 and res.version == store.version != v1
    assert store.engine.decide(REQ).rule == "deny-t"
    assert store.engine.decide(REQ).policy_version == store.version
    assert store.last_problems == ()


def test_check_reloads_only_on_change(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    store = PolicyStore(f)
    assert store.check() is None
    assert store.check() is None

    write(f, GOOD2)
    res = store.check()
    assert res is not None and res.changed
    assert store.check() is None

    # a broken file is reported once, then not retried until it changes again
    write(f, BROKEN)
    res = store.check()
    assert res is not None and not res.ok
    assert store.check() is None
    assert store.engine.decide(REQ).rule == "deny-t"

    # a comment-only edit loads but changes nothing
    write(f, GOOD2 + "# just a comment\n")
    res = store.check()
    assert res is not None and res.ok and not res.changed


def test_check_sees_an_atomic_replace_and_a_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    store = PolicyStore(f)
    tmp = tmp_path / "p.yaml.new"
    tmp.write_text(GOOD2)
    os.replace(tmp, f)  # new inode, maybe the same mtime and size
    res = store.check()
    assert res is not None and res.changed and store.engine.decide(REQ).rule == "deny-t"

    f.unlink()
    res = store.check()
    assert res is not None and not res.ok and "missing" in res.problems[0]
    assert store.check() is None
    assert store.engine.decide(REQ).rule == "deny-t"

    f.write_text(GOOD)
    res = store.check()
    assert res is not None and res.changed and store.engine.decide(REQ).rule == "allow-t"


def test_a_loader_that_crashes_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    calls = {"n": 0}

    from portcullis.policy import load_policy

    def flaky(path: Path):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("disk on fire")
        return load_policy(path)

    store = PolicyStore(f, loader=flaky)
    res = store.reload()
    assert not res.ok and "RuntimeError: disk on fire" in res.problems[0]
    assert store.engine.decide(REQ).rule == "allow-t"
