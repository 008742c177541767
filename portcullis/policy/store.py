"""``PolicyStore``: the policy in force, reloaded without a restart; a broken file never replaces a good one.

No threads and no timers here: the gateway calls ``check()`` when it likes (it costs one ``os.stat``), or
``reload()`` on a signal. Both are synchronous and return what happened.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from portcullis.policy.engine import PolicyEngine
from portcullis.policy.load import PolicyError, load_policy
from portcullis.policy.rules import PolicySet

_Signature = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """``changed``: a new policy is in force. ``version``: the version in force after the call. ``problems``: why
    the file was refused (the previous policy stays), empty when it loaded."""

    changed: bool
    version: str
    previous_version: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _signature(path: Path) -> _Signature:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)


class PolicyStore:
    """Holds the current ``PolicyEngine``. The first load must succeed (``PolicyError`` otherwise)."""

    def __init__(self, path: str | os.PathLike[str], *, loader: Callable[[Path], PolicySet] = load_policy) -> None:
        self.path = Path(path)
        self._loader = loader
        sig = self._stat()
        self._engine = PolicyEngine(loader(self.path))
        self._seen: _Signature | None = sig  # the file state last tried, good or not
        self.last_problems: tuple[str, ...] = ()

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    @property
    def policy(self) -> PolicySet:
        return self._engine.policy

    @property
    def version(self) -> str:
        return self._engine.version

    def _stat(self) -> _Signature | None:
        try:
            return _signature(self.path)
        except OSError:
            return None

    def reload(self) -> ReloadResult:
        """Load the file now. On success the new policy is in force (``changed`` is false when its content hash
        equals the current one); on failure the current policy stays and ``problems`` says why."""
        previous = self._engine.version
        self._seen = self._stat()  # before reading: a write that lands after this is seen by the next check()
        try:
            policy = self._loader(self.path)
        except PolicyError as exc:
            self.last_problems = tuple(exc.problems)
            return ReloadResult(False, previous, previous, self.last_problems)
        except Exception as exc:  # a loader must never take the gateway down; refuse and keep the last good one
            self.last_problems = (f"{self.path}: {type(exc).__name__}: {exc}",)
            return ReloadResult(False, previous, previous, self.last_problems)
        self.last_problems = ()
        if policy.version == previous:
            return ReloadResult(False, previous, previous)
        self._engine = PolicyEngine(policy)
        return ReloadResult(True, policy.version, previous)

    def check(self) -> ReloadResult | None:
        """Reload if the file changed since the last attempt (device, inode, mtime, size, ctime); else ``None``.

        A file that is missing or unreadable is reported once per change and the current policy stays.
        """
        sig = self._stat()
        if sig == self._seen:
            return None
        if sig is None:
            self._seen = None
            previous = self._engine.version
            self.last_problems = (f"{self.path}: the policy file is missing or cannot be read; keeping {previous}",)
            return ReloadResult(False, previous, previous, self.last_problems)
        return self.reload()
