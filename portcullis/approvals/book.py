"""The approval book: approval requests, votes and releases, kept in the store (they survive a restart).

Every method is one short transaction; the gateway calls them off the event loop (``asyncio.to_thread``). The rules:

- a held call opens a request, or finds the caller's pending one for the same call (no duplicates on retries);
- only a member of one of the rule's approver groups may vote, and never the requester (no self-approval);
- a deny by any approver ends the request; ``required`` distinct approvals approve it;
- an approved request releases exactly one retry of the exact call (same caller, server, method, target and
  argument digest) within ``release_window``; the release is a conditional UPDATE, so two racing retries cannot
  both go through;
- requests expire after ``ttl`` (pending) or ``release_window`` (approved, not yet used).
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, and_, func, insert, or_, select, update

from portcullis.approvals.model import (
    APPROVED,
    BREAK_GLASS,
    DENIED,
    EXPIRED,
    PENDING,
    RELEASED,
    REVIEWED,
    WITHDRAWN,
    Hold,
    covers,
    new_id,
)
from portcullis.store.schema import approval_votes, approvals, grants

MAX_GRANT_MINUTES = 24 * 60


DECIDED_CHANNEL = "portcullis_approval_decided"  # PostgreSQL NOTIFY channel: payload = the approval id


class TooManyPending(Exception):
    """The caller already has ``approvals.max_pending_per_principal`` requests pending."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} approval requests already pending")
        self.pending = pending


class ApprovalError(Exception):
    """A decision that may not be made; ``status`` is the HTTP status the admin API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Voter:
    subject: str
    key: str  # issuer + subject, as the requester's key is built
    record_text: str
    groups: frozenset[str]


class ApprovalBook:
    def __init__(self, engine: Engine, ttl: float = 3600.0, release_window: float = 900.0, required: int = 1) -> None:
        self.engine = engine
        self.ttl_ns = int(ttl * 1e9)
        self.release_ns = int(release_window * 1e9)
        self.required = required

    # --- the caller's side ---------------------------------------------------------------------------------

    def release(self, hold: Hold, now_ns: int | None = None) -> dict[str, Any] | None:
        """An approved request for exactly this call, marked released (once); None if there is none."""
        now = now_ns or time.time_ns()
        match = and_(
            approvals.c.requester_key == hold.requester_key,
            approvals.c.args_digest == hold.digest,
            approvals.c.server == hold.server,
            approvals.c.method == hold.method,
            approvals.c.target == hold.target if hold.target is not None else approvals.c.target.is_(None),
            approvals.c.state == APPROVED,
        )
        with self.engine.begin() as conn:
            rows = conn.execute(select(approvals).where(match).order_by(approvals.c.decided_ns)).mappings().all()
            for row in rows:
                if not self._still_satisfies(row, hold):
                    continue  # the rule changed since: this approval no longer answers it
                if row["decided_ns"] is not None and row["decided_ns"] + self.release_ns < now:
                    conn.execute(update(approvals).where(approvals.c.id == row["id"]).values(state=EXPIRED))
                    continue
                done = conn.execute(
                    update(approvals)
                    .where(and_(approvals.c.id == row["id"], approvals.c.state == APPROVED))
                    .values(state=RELEASED, released_ns=now)
                )
                if done.rowcount == 1:
                    return {**row, "state": RELEASED, "released_ns": now}
        return None

    def _still_satisfies(self, row: Any, hold: Hold) -> bool:
        """An approval counts for the rule as it is now: same rule, same approvers, at least as many approvals."""
        needed = hold.required or self.required
        return bool(
            row["rule"] == hold.rule
            and sorted(orjson.loads(row["approvers"])) == sorted(hold.approvers)
            and row["required"] >= needed
            and (row["all_groups"] or 0) >= (1 if hold.all_groups else 0)
        )

    def grant_for(self, hold: Hold, now_ns: int | None = None) -> dict[str, Any] | None:
        """A live grant that covers this call (same requester, server, method, target; arguments match)."""
        now = now_ns or time.time_ns()
        q = select(grants).where(
            and_(
                grants.c.requester_key == hold.requester_key,
                grants.c.server == hold.server,
                grants.c.method == hold.method,
                grants.c.expires_ns > now,
                grants.c.revoked_ns.is_(None),
            )
        )
        with self.engine.connect() as conn:
            for row in conn.execute(q).mappings():
                if row["target"] != hold.target or row["rule"] != hold.rule:
                    continue
                patterns = None if row["arguments"] is None else orjson.loads(row["arguments"])
                if covers(patterns, hold.arguments):
                    return {str(k): v for k, v in row.items() if k != "requester_key"}
        return None

    def expire_due(self, now_ns: int | None = None, limit: int = 500) -> builtins.list[dict[str, Any]]:
        """Pending requests past their expiry, marked expired now; each is returned by exactly one caller (any
        replica), which tells the webhooks and the record."""
        now = now_ns or time.time_ns()
        c = approvals.c
        out: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            due = conn.execute(
                select(approvals)
                .where(and_(c.state == PENDING, c.expires_ns < now))
                .order_by(c.expires_ns)
                .limit(limit)
            ).mappings()
            for row in list(due):
                done = conn.execute(
                    update(approvals).where(and_(c.id == row["id"], c.state == PENDING)).values(state=EXPIRED)
                )
                if done.rowcount == 1:
                    out.append(_public({**dict(row), "state": EXPIRED}, None))
        return out

    def withdraw(self, approval_id: str, now_ns: int | None = None) -> bool:
        """The waiting caller cancelled: a pending request is withdrawn (nothing left to decide)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(approvals)
                .where(and_(approvals.c.id == approval_id, approvals.c.state == PENDING))
                .values(state=WITHDRAWN, decided_ns=now_ns or time.time_ns(), decided_by="withdrawn by the caller")
            )
            return done.rowcount == 1

    def break_glass(self, hold: Hold, reason: str, now_ns: int | None = None) -> dict[str, Any]:
        """The call goes through without approval (a break-glass caller, with a reason); it awaits review."""
        now = now_ns or time.time_ns()
        row = self._row(hold, now, BREAK_GLASS, reason)
        row.update(decided_ns=now, decided_by=f"break-glass by {hold.requester}", reason=reason, released_ns=now)
        with self.engine.begin() as conn:
            conn.execute(insert(approvals).values(**row))
        return row

    def _row(self, hold: Hold, now: int, state: str, justification: str | None) -> dict[str, Any]:
        return {
            "id": new_id(),
            "state": state,
            "created_ns": now,
            "expires_ns": now + self.ttl_ns,
            "server": hold.server,
            "method": hold.method,
            "target": hold.target,
            "args_digest": hold.digest,
            "requester_key": hold.requester_key,
            "requester": hold.requester,
            "requester_subject": hold.requester_subject,
            "rule": hold.rule,
            "policy_version": hold.policy_version,
            "approvers": orjson.dumps(list(hold.approvers)).decode(),
            "required": hold.required or self.required,
            "all_groups": 1 if hold.all_groups else 0,
            "session_id": hold.session_id,
            "decided_ns": None,
            "decided_by": None,
            "reason": None,
            "released_ns": None,
            "justification": justification,
        }

    def open(
        self,
        hold: Hold,
        now_ns: int | None = None,
        justification: str | None = None,
        shown: str | None = None,
        max_pending: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The caller's pending request for this call, or a new one. Returns (request, created).

        A call denied within the last ``ttl`` is not asked again: its denied request is returned instead. A new
        request beyond ``max_pending`` live pending ones of this caller raises :class:`TooManyPending` (approvers'
        inboxes are not flooded by one caller)."""
        now = now_ns or time.time_ns()
        with self.engine.begin() as conn:
            pending = (
                conn.execute(
                    select(approvals)
                    .where(
                        and_(
                            approvals.c.requester_key == hold.requester_key,
                            approvals.c.args_digest == hold.digest,
                            approvals.c.server == hold.server,
                            approvals.c.method == hold.method,
                            approvals.c.state.in_((PENDING, DENIED)),
                        )
                    )
                    .order_by(approvals.c.created_ns.desc())
                )
                .mappings()
                .all()
            )
            for row in pending:
                if row["target"] != hold.target:
                    continue
                if row["state"] == PENDING and row["expires_ns"] >= now:
                    return dict(row), False
                if row["state"] == DENIED and (row["decided_ns"] or 0) + self.ttl_ns >= now:
                    return dict(row), False
            if max_pending is not None:
                c = approvals.c
                live = and_(c.requester_key == hold.requester_key, c.state == PENDING, c.expires_ns >= now)
                pending_now = conn.execute(select(func.count()).select_from(approvals).where(live)).scalar_one()
                if pending_now >= max_pending:
                    raise TooManyPending(int(pending_now))
            new = self._row(hold, now, PENDING, justification)
            new["arguments"] = shown
            conn.execute(insert(approvals).values(**new))
            return new, True

    # --- the approver's side -------------------------------------------------------------------------------

    def get(self, approval_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).mappings().first()
            if row is None:
                return None
            votes = (
                conn.execute(
                    select(approval_votes)
                    .where(approval_votes.c.approval_id == approval_id)
                    .order_by(approval_votes.c.seq)
                )
                .mappings()
                .all()
            )
        return _public(dict(row), [dict(v) for v in votes])

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(approvals).order_by(approvals.c.created_ns.desc()).limit(limit)
        if state is not None:
            q = q.where(approvals.c.state == state)
        with self.engine.connect() as conn:
            return [_public(dict(r), None) for r in conn.execute(q).mappings()]

    def list_for(
        self, requester_key: str, groups: frozenset[str], state: str | None = None, limit: int = 100
    ) -> builtins.list[dict[str, Any]]:  # `list` is a method here
        """The newest ``limit`` requests this caller may see: asked for by them, or naming one of their groups as
        approvers (the visibility filter runs in SQL, before the limit)."""
        c = approvals.c
        who = [c.requester_key == requester_key]
        who += [c.approvers.contains(orjson.dumps(g).decode(), autoescape=True) for g in sorted(groups)]
        q = select(approvals).where(or_(*who)).order_by(c.created_ns.desc()).limit(limit)
        if state is not None:
            q = q.where(c.state == state)
        with self.engine.connect() as conn:
            rows = [_public(dict(r), None) for r in conn.execute(q).mappings()]
        # the SQL test is a substring of the JSON list: keep exactly the rows whose list names one of the groups
        return [r for r in rows if r["requester_key"] == requester_key or set(r["approvers"]) & groups]

    def vote(
        self,
        approval_id: str,
        voter: Voter,
        decision: str,
        reason: str | None,
        now_ns: int | None = None,
        grant: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one approver's decision. Raises ApprovalError (400, 404, 403, 409) when it may not be made.

        ``grant`` (approve only): ``{"minutes": N, "arguments": {name: glob} | None}`` — once approved, the requester
        may make calls like this one without asking again for N minutes (arguments matching, if given)."""
        if decision not in ("approve", "deny", "review"):
            raise ApprovalError(400, "decision must be 'approve', 'deny' or 'review'")
        if grant is not None:
            _check_grant(grant, decision)
        now = now_ns or time.time_ns()
        with self.engine.begin() as conn:
            # take the write lock before reading (SQLite: the first write of the transaction; PostgreSQL: the row
            # lock), so that two votes on one request are decided one after the other, never on the same stale read
            conn.execute(update(approvals).where(approvals.c.id == approval_id).values(state=approvals.c.state))
            row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).mappings().first()
            if row is None:
                raise ApprovalError(404, f"no approval request {approval_id}")
            if voter.key == row["requester_key"]:
                raise ApprovalError(403, "the requester cannot approve, deny or review their own call")
            groups = set(orjson.loads(row["approvers"]))
            if not groups & voter.groups:
                raise ApprovalError(403, f"only members of {sorted(groups)} may decide this request")
            if row["state"] == PENDING and row["expires_ns"] < now:
                raise ApprovalError(409, f"approval request {approval_id} has expired")
            wanted = BREAK_GLASS if decision == "review" else PENDING
            if row["state"] != wanted:
                raise ApprovalError(409, f"approval request {approval_id} is {row['state']}, not {wanted}")
            if grant is not None and (row["required"] > 1 or row["all_groups"]):
                raise ApprovalError(400, "a grant needs a rule that one approval decides")
            votes = conn.execute(
                select(approval_votes.c.voter_subject, approval_votes.c.voter_groups).where(
                    and_(approval_votes.c.approval_id == approval_id, approval_votes.c.vote == "approve")
                )
            ).all()
            approvers = {r[0] for r in votes}
            if decision == "approve" and voter.key in approvers:
                raise ApprovalError(409, "you have already approved this request")
            mine = sorted(groups & voter.groups)
            conn.execute(
                insert(approval_votes).values(
                    approval_id=approval_id,
                    voter_subject=voter.key,
                    voter=voter.record_text,
                    vote=decision,
                    reason=reason,
                    ts_ns=now,
                    voter_groups=orjson.dumps(mine).decode(),
                )
            )
            if decision == "review":
                state = REVIEWED
            elif decision == "deny":
                state = DENIED
            else:
                enough = len(approvers) + 1 >= row["required"]
                if row["all_groups"]:
                    people = [(r[0], set(orjson.loads(r[1] or "[]"))) for r in votes] + [(voter.key, set(mine))]
                    enough = enough and _one_person_per_group(groups, people)
                state = APPROVED if enough else PENDING
            if state == REVIEWED:
                conn.execute(update(approvals).where(approvals.c.id == approval_id).values(state=REVIEWED))
            elif state != PENDING:
                done = conn.execute(
                    update(approvals)
                    .where(and_(approvals.c.id == approval_id, approvals.c.state == PENDING))
                    .values(state=state, decided_ns=now, decided_by=voter.record_text, reason=reason)
                )
                if done.rowcount != 1:
                    raise ApprovalError(409, f"approval request {approval_id} was decided meanwhile")
            if state != PENDING and conn.dialect.name == "postgresql":  # other replicas' waiters wake at once
                conn.execute(select(func.pg_notify(DECIDED_CHANNEL, approval_id)))  # sent on commit
            if state == APPROVED and grant is not None:
                patterns = grant.get("arguments")
                conn.execute(
                    insert(grants).values(
                        id="grt_" + new_id()[4:],
                        approval_id=approval_id,
                        requester_key=row["requester_key"],
                        requester=row["requester"],
                        server=row["server"],
                        method=row["method"],
                        target=row["target"],
                        arguments=None if patterns is None else orjson.dumps(patterns).decode(),
                        created_ns=now,
                        expires_ns=now + int(grant["minutes"]) * 60 * 1_000_000_000,
                        granted_by=voter.record_text,
                        rule=row["rule"],
                    )
                )
        got = self.get(approval_id)
        assert got is not None
        return got


def _one_person_per_group(groups: set[str], people: list[tuple[str, set[str]]]) -> bool:
    """Whether each group can be matched to a different approving person who is in it (bipartite matching)."""
    owner: dict[str, str] = {}  # person -> group they stand for

    def place(group: str, seen: set[str]) -> bool:
        for person, member_of in people:
            if group in member_of and person not in seen:
                seen.add(person)
                if person not in owner or place(owner[person], seen):
                    owner[person] = group
                    return True
        return False

    return all(place(g, set()) for g in sorted(groups))


def _check_grant(grant: dict[str, Any], decision: str) -> None:
    if decision != "approve":
        raise ApprovalError(400, "only an approval can grant time-boxed access")
    minutes = grant.get("minutes")
    if isinstance(minutes, float) and minutes.is_integer():  # JSON has one number type: 30.0 is the integer 30
        minutes = grant["minutes"] = int(minutes)
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= MAX_GRANT_MINUTES:
        raise ApprovalError(400, f"grant.minutes must be a whole number from 1 to {MAX_GRANT_MINUTES}")
    args = grant.get("arguments")
    if args is not None and (not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values())):
        raise ApprovalError(400, 'grant.arguments must be {"name": "glob", ...} or null (any arguments)')
    if set(grant) - {"minutes", "arguments"}:
        raise ApprovalError(400, "grant takes only 'minutes' and 'arguments'")


def _public(row: dict[str, Any], votes: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A request as the book hands it out (the approver groups as a list); the admin API drops ``requester_key``."""
    out = {str(k): v for k, v in row.items()}  # plain str keys: column names are subclasses
    if out.get("arguments") is not None:
        out["arguments"] = orjson.loads(out["arguments"])
    now = time.time_ns()
    if out["state"] == PENDING and out["expires_ns"] < now:
        out["state"] = EXPIRED  # as it is now, whether or not anyone has touched it since
    out["approvers"] = orjson.loads(row["approvers"])
    if votes is not None:
        out["votes"] = [
            {"voter": v["voter"], "vote": v["vote"], "reason": v["reason"], "ts_ns": v["ts_ns"]} for v in votes
        ]
    return out
