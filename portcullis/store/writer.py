"""Group commit: records from many flows are written by one thread in batches, one transaction per batch.

``submit`` returns a future that resolves when the batch holding the records has committed (or fails with
StoreError). The edge awaits it before releasing a response (durability mode ``commit``), so a response a client
received always has its record. One wake-up of the event loop per batch keeps the per-record cost low.

The hot path is kept short on both sides, because at low concurrency nearly every call is its own batch:

- The loop thread does not wake the writer once per ``submit``: items submitted while the loop runs its ready
  callbacks go to the writer together, in one queue put, from a ``call_soon`` callback queued by the first of them
  (no timer: it runs once the callbacks already queued have run, and the loop does not sleep before it). That is
  one thread wake-up, and one batch, for all the responses a busy loop produced at once; a batch still holds at
  most ``max_batch`` submits.
- The writer thread keeps one DBAPI connection for its lifetime and runs statements compiled once from the shared
  SQLAlchemy tables (:mod:`portcullis.store.schema`) for the engine's dialect, with plain tuples (or dicts, for a
  named paramstyle) as parameters: ``cursor.executemany`` + ``commit`` per batch, no per-batch statement
  construction, compile-cache lookup, pool check-out or result object. The DBAPI's own transaction is used (PEP 249:
  a transaction begins implicitly and ends with ``commit``/``rollback``), so this is the same on SQLite and
  PostgreSQL. After a failure the connection is dropped and a fresh one is taken for the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import operator
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, LargeBinary, String, Table, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import PoolProxiedConnection

from portcullis.errors import StoreError
from portcullis.flow import Binding, Record
from portcullis.store.chain import CHAIN_FIELDS, GENESIS, checkpoint_message, digest, link
from portcullis.store.schema import bindings, checkpoints, records, sessions

log = logging.getLogger("portcullis.store")

_STOP = object()


@dataclass(slots=True)
class SessionOpen:
    id: str
    server: str
    era: str
    protocol_version: str | None
    client_info: str | None
    principal: str | None
    upstream_session: str | None
    created_ns: int
    owner: str | None = None
    state: str | None = None


@dataclass(slots=True)
class SessionEnd:
    id: str
    ended_ns: int
    reason: str


Item = Record | SessionOpen | SessionEnd | Binding
Waiter = asyncio.Future[None] | None
Entry = tuple[list[Item], Waiter]


def _columns(table: Table, item: type) -> tuple[str, ...]:
    """The columns of ``table`` that ``item`` has a field of the same name for, in the table's order.

    The schema is the one source of truth: a column added to the table and to the item's dataclass is written
    without touching this module (``seq`` and the session's end columns have no field, so they are left out).
    """
    names = {f.name for f in dataclasses.fields(item)}
    return tuple(c.name for c in table.columns if c.name in names)


RECORD_COLUMNS = tuple(c for c in _columns(records, Record) if c != "seq")  # the store numbers records
SESSION_COLUMNS = _columns(sessions, SessionOpen)


def _text_limits(table: Table, cols: tuple[str, ...]) -> tuple[tuple[str, int | None], ...]:
    """(column, length or None) of the text columns among ``cols``: what :func:`fit` bounds."""
    out = []
    for name in cols:
        typ = table.c[name].type
        if isinstance(typ, String):  # Text is a String without a length
            out.append((name, typ.length))
    return tuple(out)


RECORD_TEXT = _text_limits(records, RECORD_COLUMNS)
SESSION_TEXT = _text_limits(sessions, SESSION_COLUMNS)


def fit(item: Any, limits: tuple[tuple[str, int | None], ...]) -> None:
    """Make an item's text storable everywhere, before it is hashed: a value longer than its column is cut (with
    ``…`` at the end; PostgreSQL refuses it, SQLite would keep it), and NUL characters, which PostgreSQL text cannot
    hold, become U+FFFD. A client's odd id or method thus never fails a batch (and everyone's responses with it);
    the message itself is kept whole in ``payload`` (bytes)."""
    for name, limit in limits:
        v = getattr(item, name)
        if v.__class__ is not str:
            continue
        if "\x00" in v:
            v = v.replace("\x00", "\ufffd")
            setattr(item, name, v)
        if limit is not None and len(v) > limit:
            setattr(item, name, v[: limit - 1] + "…")


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement compiled once for one dialect, and how to turn an item into its DBAPI parameters."""

    sql: str
    params: Callable[[Any], Sequence[Any] | dict[str, Any]]


def _native_binary(dialect: Dialect) -> bool:
    """Whether the DBAPI takes ``bytes`` for a binary column as it is (the dialect's Binary() wrap is a no-op)."""
    return dialect.driver in ("pysqlite", "psycopg", "psycopg2")


def _statement(compiled: Any, dialect: Dialect, attrs: dict[str, str]) -> Statement:
    """``attrs`` maps each bind name of ``compiled`` to the item attribute that supplies it."""
    names: list[str] = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
    getter = operator.attrgetter(*(attrs[n] for n in names))
    procs: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(names):
        typ = compiled.binds[name].type
        proc = typ.dialect_impl(dialect).bind_processor(dialect)
        if proc is None or (isinstance(typ, LargeBinary) and _native_binary(dialect)):
            continue
        procs.append((i, proc))
    params: Callable[[Any], Sequence[Any] | dict[str, Any]]
    if not procs and compiled.positional:
        params = getter  # one C call per item: a tuple in the statement's parameter order
    else:

        def params(item: Any) -> Sequence[Any] | dict[str, Any]:
            values = list(getter(item))
            for i, proc in procs:
                values[i] = proc(values[i])
            return values if compiled.positional else dict(zip(names, values, strict=True))

    return Statement(compiled.string, params)


def compile_statements(dialect: Dialect) -> tuple[Statement, Statement, Statement]:
    """(insert a record, insert a session, end a session), compiled for ``dialect`` from the shared schema."""

    def ins(table: Table, cols: tuple[str, ...]) -> Statement:
        # inline(): no RETURNING of generated keys (PostgreSQL would add one); executemany needs none
        compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(cols))
        return _statement(compiled, dialect, {c: c for c in cols})

    end = (
        update(sessions)
        .where(sessions.c.id == bindparam("b_id"), sessions.c.ended_ns.is_(None))
        .values(ended_ns=bindparam("b_ended_ns"), end_reason=bindparam("b_reason"))
    )
    end_attrs = {"b_id": "id", "b_ended_ns": "ended_ns", "b_reason": "reason"}
    return (
        ins(records, RECORD_COLUMNS),
        ins(sessions, SESSION_COLUMNS),
        _statement(end.compile(dialect=dialect), dialect, end_attrs),
    )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: bytes
    ts_ns: int
    key_id: str
    signature: bytes
    chain: str
    counter: int
    prev_link: bytes


class ChainTaken(Exception):
    """Another process holds this writer's audit chain."""


def chain_lock_key(chain: str) -> int:
    """The advisory-lock id (signed 64-bit) of an audit chain's writer."""
    return int.from_bytes(hashlib.sha256(b"portcullis chain " + chain.encode()).digest()[:8], "big", signed=True)


BINDING_COLUMNS = ("server", "what", "digest", "owner", "created_ns")


def _insert_ignore(dialect: Dialect) -> Any:
    """INSERT … that keeps an existing row (SQLite: OR IGNORE; PostgreSQL: ON CONFLICT DO NOTHING)."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(bindings).on_conflict_do_nothing()
    else:
        stmt = insert(bindings).prefix_with("OR IGNORE")
    return stmt.compile(dialect=dialect, column_keys=list(BINDING_COLUMNS))


class CommitListener(Protocol):
    """Told, on the writer thread, of what has just committed (the audit exports). Must not block."""

    needs_seq: bool  # whether it reads Record.seq (the writer then fetches the numbers the store gave)

    def committed(self, records: Sequence[Record]) -> None: ...

    def checkpointed(self, checkpoint: Checkpoint) -> None: ...


class Fanout:
    """Several commit listeners as one (each one's failure is its own)."""

    def __init__(self, listeners: Sequence[CommitListener]) -> None:
        self.listeners = tuple(listeners)
        self.needs_seq = any(x.needs_seq for x in self.listeners)

    def committed(self, records: Sequence[Record]) -> None:
        for listener in self.listeners:
            try:
                listener.committed(records)
            except Exception as exc:
                log.warning("a commit listener failed: %s", type(exc).__name__)

    def checkpointed(self, checkpoint: Checkpoint) -> None:
        for listener in self.listeners:
            try:
                listener.checkpointed(checkpoint)
            except Exception as exc:
                log.warning("a commit listener failed: %s", type(exc).__name__)


CHECKPOINT_COLUMNS = ("seq", "hash", "ts_ns", "key_id", "signature", "chain", "counter", "prev_link")


class StoreWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 2048,
        on_failure: Callable[[BaseException], None] | None = None,
        linger: float = 0.05,
        signer: Any = None,
        key_id: str = "",
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        chain_id: str = "gateway",
        listener: CommitListener | None = None,
        on_health: Callable[[bool, str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._pending: list[Entry] = []  # submitted during this pass of the loop, not yet handed to the writer
        self._soon: asyncio.Handle | None = None  # a hand-over at the end of this loop pass (someone waits)
        self._later: asyncio.TimerHandle | None = None  # a hand-over within ``linger`` (nobody waits yet)
        self.linger = linger
        self._on_failure = on_failure
        self._record_sql, self._session_sql, self._end_sql = compile_statements(engine.dialect)
        self._bind_sql = _statement(_insert_ignore(engine.dialect), engine.dialect, {c: c for c in BINDING_COLUMNS})
        cp = insert(checkpoints).inline().compile(dialect=engine.dialect, column_keys=list(CHECKPOINT_COLUMNS))
        self._checkpoint_sql = _statement(cp, engine.dialect, {c: c for c in CHECKPOINT_COLUMNS})
        self.chain_id = chain_id  # this writer's chain (one writer per chain)
        ph = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._head_sql = f"SELECT hash FROM records WHERE chain = {ph} AND hash IS NOT NULL ORDER BY seq DESC LIMIT 1"
        self._listener = listener
        self._on_health = on_health  # (healthy, why) when the store starts failing and when it recovers
        self._seqs_sql = f"SELECT seq FROM records WHERE chain = {ph} ORDER BY seq DESC LIMIT {ph}"
        self._head_seq_sql = (
            f"SELECT seq, hash FROM records WHERE chain = {ph} AND hash IS NOT NULL ORDER BY seq DESC LIMIT 1"
        )
        self._last_cp_sql = f"SELECT counter, signature FROM checkpoints WHERE chain = {ph} ORDER BY id DESC LIMIT 1"
        self._cp_counter: int | None = None  # this chain's last checkpoint (loaded on the first checkpoint)
        self._cp_link = GENESIS
        self._chain: bytes | None = None  # the last record's hash (loaded from the store before a batch)
        self._chain_values = operator.attrgetter(*CHAIN_FIELDS)
        self._signer = signer  # Ed25519 private key for checkpoints, or None (chain only)
        self._key_id = key_id
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval
        self._unsealed = 0  # records written since the last checkpoint
        self._last_checkpoint = time.monotonic()
        self._conn: PoolProxiedConnection | None = None  # the writer thread's own, for its lifetime
        self._dbapi: Any = None  # its DBAPI connection
        self._cur: Any = None  # and one cursor on it
        self.healthy = True
        self.batches = 0
        self.written = 0
        self.failures = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._run, name="portcullis-store-writer", daemon=True)
        self._thread.start()

    def submit(self, items: list[Item], wait: bool = True) -> asyncio.Future[None] | None:
        """Queue items (FIFO); with ``wait``, a future that resolves once they have committed.

        Call it on the loop's thread (``wait`` needs the loop); from any other thread the items go straight to
        the writer.
        """
        fut: asyncio.Future[None] | None = None
        loop = self._loop
        if wait:
            assert loop is not None
            fut = loop.create_future()
        if loop is None or threading.get_ident() != self._loop_thread:
            self._q.put([(items, fut)])
            return fut
        self._pending.append((items, fut))
        if wait:
            if self._soon is None:
                if self._later is not None:
                    self._later.cancel()
                    self._later = None
                self._soon = loop.call_soon(self._hand_over)
        elif self._soon is None and self._later is None:
            # nobody waits for these (e.g. a request's record while its call runs): they ride along with the next
            # awaited commit, or go within ``linger`` seconds, whichever is first — one wake-up instead of two
            self._later = loop.call_later(self.linger, self._hand_over)
        return fut

    def _hand_over(self) -> None:
        """Everything submitted so far goes to the writer in one put (one wake-up)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._soon = None
        if self._pending:
            entries, self._pending = self._pending, []
            self._q.put(entries)

    async def write(self, items: list[Item]) -> None:
        fut = self.submit(items, wait=True)
        assert fut is not None
        await fut

    def close(self, timeout: float = 10.0) -> None:
        self._hand_over()  # nothing submitted is left behind
        if self._thread is None:
            return
        self._q.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    # --- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        q = self._q
        stop = False
        try:
            while not stop:
                try:
                    first = q.get(timeout=self._idle_wait())
                except queue.Empty:  # idle with an unsealed tail: seal it now, not at the next traffic
                    if self._signer is not None and self._unsealed and self.healthy:
                        with contextlib.suppress(Exception):
                            self._checkpoint(self._cursor())
                    continue
                if first is _STOP:
                    break
                batch: list[Entry] = first
                while len(batch) < self._max_batch:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch += nxt
                if len(batch) <= self._max_batch:
                    self._commit(batch)
                else:  # one busy pass of the loop handed over more than a batch holds
                    for i in range(0, len(batch), self._max_batch):
                        self._commit(batch[i : i + self._max_batch])
        finally:
            if self._signer is not None and self._unsealed and self.healthy:
                with contextlib.suppress(Exception):
                    self._checkpoint(self._cursor())  # a clean shutdown seals the tail
            self._disconnect()

    def _idle_wait(self) -> float | None:
        if self._signer is None or not self._unsealed:
            return None
        return max(0.0, self._last_checkpoint + self._checkpoint_interval - time.monotonic())

    def _cursor(self) -> Any:
        if self._cur is None:
            fairy = self._engine.raw_connection()  # through the pool: the engine's connect hooks (PRAGMAs) apply
            try:
                dbapi = fairy.dbapi_connection
                assert dbapi is not None
                cur = dbapi.cursor()
                if self._engine.dialect.name == "postgresql":
                    self._own_chain(cur, dbapi)
                self._cur = cur
            except BaseException:
                fairy.invalidate()
                raise
            self._conn, self._dbapi = fairy, dbapi
        return self._cur

    def _own_chain(self, cur: Any, dbapi: Any) -> None:
        """PostgreSQL: one writer per chain across every process sharing the database (a session-level advisory
        lock, held by this connection). A second replica configured with the same chain is refused, never forks
        it; the lock goes with the connection (a crash frees it)."""
        cur.execute("SELECT pg_try_advisory_lock(%s)", (chain_lock_key(self.chain_id),))
        owned = bool(cur.fetchone()[0])
        dbapi.commit()
        if not owned:
            log.error("audit chain %r is being written by another process: refusing to write it too", self.chain_id)
            raise ChainTaken(f"audit chain {self.chain_id!r} is written by another process")

    def _disconnect(self, invalidate: bool = False) -> None:
        conn, cur = self._conn, self._cur
        self._conn = self._dbapi = self._cur = None
        with contextlib.suppress(Exception):
            if cur is not None:
                cur.close()
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if invalidate or self._engine.dialect.name == "postgresql":
                conn.invalidate()  # closed: the next attempt opens a fresh connection (and a held chain lock goes)
            else:
                conn.close()  # back to the pool

    def _write(
        self, recs: list[Record], opens: list[SessionOpen], ends: list[SessionEnd], binds: list[Binding] | None = None
    ) -> None:
        cur = self._cursor()
        if self._chain is None:
            cur.execute(self._head_sql, (self.chain_id,))
            row = cur.fetchone()
            self._chain = bytes(row[0]) if row is not None else GENESIS
        start = self._chain
        try:
            if opens:
                s = self._session_sql
                for o in opens:
                    fit(o, SESSION_TEXT)
                cur.executemany(s.sql, [s.params(o) for o in opens])
            if recs:
                prev = start
                values = self._chain_values
                chain_id = self.chain_id
                for r in recs:  # in the order they are inserted, which is seq order (one writer per chain)
                    fit(r, RECORD_TEXT)
                    r.chain = chain_id
                    r.prev_hash = prev
                    prev = r.hash = digest(prev, values(r))
                s = self._record_sql
                cur.executemany(s.sql, [s.params(r) for r in recs])
                self._chain = prev
                if self._listener is not None and self._listener.needs_seq:  # the store's numbers for them (ours
                    # alone: one writer per chain); one more query per batch, so only for a listener that wants them
                    cur.execute(self._seqs_sql, (chain_id, len(recs)))
                    for r, (seq,) in zip(recs, reversed(cur.fetchall()), strict=True):
                        r.seq = int(seq)
            if ends:
                s = self._end_sql
                cur.executemany(s.sql, [s.params(e) for e in ends])
            if binds:  # first binding wins: the same id minted again for the same caller is no news
                s = self._bind_sql
                cur.executemany(s.sql, [s.params(b) for b in binds])
            self._dbapi.commit()
        except BaseException:
            # rolled back (or not: a commit can fail after it took effect): read the head again before the next batch
            self._chain = None
            raise
        self._unsealed += len(recs)
        if self._listener is not None and recs:
            try:
                self._listener.committed(recs)
            except Exception as exc:  # an export never fails a commit
                log.warning("audit export refused a batch: %s", type(exc).__name__)
        if (
            self._signer is not None
            and self._unsealed
            and (
                self._unsealed >= self._checkpoint_every
                or time.monotonic() - self._last_checkpoint >= self._checkpoint_interval
            )
        ):
            self._checkpoint(cur)

    def _checkpoint(self, cur: Any) -> None:
        """Sign this chain at its last record, linked to the previous checkpoint (a failure here loses no record:
        the next batch, or the next idle tick, tries again)."""
        try:
            cur.execute(self._head_seq_sql, (self.chain_id,))
            row = cur.fetchone()
            if row is None:
                return
            seq, chain_hash, now = int(row[0]), bytes(row[1]), time.time_ns()
            if self._cp_counter is None:
                cur.execute(self._last_cp_sql, (self.chain_id,))
                last = cur.fetchone()
                self._cp_counter = int(last[0]) if last is not None and last[0] is not None else 0
                self._cp_link = link(bytes(last[1])) if last is not None else GENESIS
            counter = self._cp_counter + 1
            msg = checkpoint_message(self.chain_id, counter, self._cp_link, seq, chain_hash, now)
            sig = self._signer.sign(msg)
            s = self._checkpoint_sql
            cp = Checkpoint(seq, chain_hash, now, self._key_id, sig, self.chain_id, counter, self._cp_link)
            cur.execute(s.sql, s.params(cp))
            self._dbapi.commit()
            self._cp_counter, self._cp_link = counter, link(sig)
            if self._listener is not None:
                try:
                    self._listener.checkpointed(cp)
                except Exception as exc:
                    log.warning("audit export refused a checkpoint: %s", type(exc).__name__)
            self._unsealed = 0
            self._last_checkpoint = time.monotonic()
        except Exception as exc:
            log.warning("audit checkpoint not written: %s", type(exc).__name__)
            self._cp_counter = None
            with contextlib.suppress(Exception):
                self._dbapi.rollback()

    def _commit(self, batch: list[Entry]) -> None:
        recs: list[Record] = []
        opens: list[SessionOpen] = []
        ends: list[SessionEnd] = []
        binds: list[Binding] = []
        for items, _fut in batch:
            for it in items:
                if isinstance(it, Record):
                    recs.append(it)
                elif isinstance(it, SessionOpen):
                    opens.append(it)
                elif isinstance(it, SessionEnd):
                    ends.append(it)
                else:
                    binds.append(it)
        exc: BaseException | None = None
        for attempt in range(3):
            try:
                self._write(recs, opens, ends, binds)
                exc = None
                break
            except Exception as e:  # the store failed: every waiter of this batch is refused
                exc = e
                self._rollback()
                if attempt < 2:
                    time.sleep(0.01 * (attempt + 1))
        if exc is None:
            self.batches += 1
            self.written += len(recs)
            if not self.healthy:
                log.warning("recording store recovered")
                self.healthy = True
                self._health(True, "recovered")
        else:
            self.failures += 1
            if self.healthy:
                log.error("recording store write failed: %s", type(exc).__name__)
                self.healthy = False
                self._health(False, type(exc).__name__)
            if self._on_failure is not None:
                with contextlib.suppress(Exception):
                    self._on_failure(exc)
        futs = [f for _i, f in batch if f is not None]
        if futs and self._loop is not None and not self._loop.is_closed():
            err = None if exc is None else StoreError(f"recording store unavailable ({type(exc).__name__})")
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, futs, err)

    def _health(self, healthy: bool, why: str) -> None:
        if self._on_health is not None:
            try:
                self._on_health(healthy, why)
            except Exception as exc:
                log.warning("store health callback failed: %s", type(exc).__name__)

    def _rollback(self) -> None:
        """After a failed batch: nothing of it stays, and the next attempt starts on a fresh connection."""
        if self._dbapi is not None:
            with contextlib.suppress(Exception):
                self._dbapi.rollback()
        self._disconnect(invalidate=True)


def _resolve(futs: list[asyncio.Future[None]], err: StoreError | None) -> None:
    for f in futs:
        if f.done():
            continue
        if err is None:
            f.set_result(None)
        else:
            f.set_exception(err)
