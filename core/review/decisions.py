"""Review: people decide the mined pairs, one keystroke each, without overwriting each other.

Every decision is a row in ``decisions`` (reviewer, time, action, the pair's state before and
after). Every decision that departs from what the judge proposed (reject, swap, another candidate,
an edited chosen, and the undo of any of these) is also a row in ``audit_log``; neither table is
ever updated or deleted from, so the history can be read back whole.

Concurrency is optimistic: a reviewer decides against the pair's ``version`` they saw; if someone
changed the pair since, :class:`Conflict` carries the current state and the reviewer chooses again.
The queue hands out pairs with a short lease (``claimed_by``/``claimed_at``) so that two reviewers
working the same queue get different pairs.

Every write to ``pairs`` goes through one lock per database in this process (the single writer), so
each decision's version check sees the previous decision's result. DuckDB's own write-write conflict
detection cannot be relied on here: with DuckDB 2.0, an ``UPDATE … RETURNING`` on a table with a
primary key, run while another transaction has updated the same row, silently discards that
transaction's committed update (a lost decision; tests/test_concurrency.py caught it).
"""

from __future__ import annotations

import functools
import json
import threading
import uuid

import duckdb

from core.store import WorkspaceError, now

ACTIONS = ("approve", "reject", "swap", "skip", "undo", "pick_chosen", "pick_rejected", "edit_chosen")


# Decisions that change what the judge proposed: each is also written to the audit log.
OVERRIDES = ("reject", "swap", "pick_chosen", "pick_rejected", "edit_chosen")


STATE = ("status", "chosen_candidate_id", "rejected_candidate_id", "chosen_text", "rejected_text", "version")


LEASE_S = 300


_locks: dict = {}


_locks_guard = threading.Lock()


def _write_lock(ws) -> threading.RLock:
    """The lock serialising this process's writes to one workspace's pairs."""
    with _locks_guard:
        return _locks.setdefault(ws.db_path, threading.RLock())


def _serialized(fn):
    @functools.wraps(fn)
    def wrapper(ws, *args, **kwargs):
        with _write_lock(ws):
            return fn(ws, *args, **kwargs)
    return wrapper


class Conflict(WorkspaceError):
    """The pair changed since the reviewer saw it; `current` is its state now, `last` who changed it."""

    def __init__(self, pair_id: str, current: dict, last: dict | None):
        who = f" by {last['reviewer']} ({last['action']})" if last else ""
        super().__init__(f"pair {pair_id} changed since you opened it{who}: look at it again and choose")
        self.pair_id, self.current, self.last = pair_id, current, last


def _state(cur, pair_id: str) -> dict | None:
    row = cur.execute(f"SELECT {', '.join(STATE)}, second_review, run_id, item_id FROM pairs WHERE pair_id = ?", [pair_id]).fetchone()
    return dict(zip((*STATE, "second_review", "run_id", "item_id"), row)) if row else None


def _last_decision(cur, pair_id: str) -> dict | None:
    row = cur.execute(
        "SELECT reviewer, action, created_at FROM decisions WHERE pair_id = ? AND action <> 'skip' ORDER BY created_at DESC LIMIT 1",
        [pair_id],
    ).fetchone()
    return dict(zip(("reviewer", "action", "created_at"), row)) if row else None


def _candidate(cur, candidate_id: str) -> tuple[str, str, str, str] | None:
    """(run_id, item_id, text, finish_reason) of a candidate."""
    return cur.execute("SELECT run_id, item_id, text, finish_reason FROM candidates WHERE candidate_id = ?", [candidate_id]).fetchone()


def _changed_pair(cur, before: dict, pair: tuple, action: str, reviewer: str, chosen_candidate_id, rejected_candidate_id, chosen_text) -> dict:
    """The pair's state after an action (not yet written)."""
    run_id, item_id = pair
    after = {k: before[k] for k in STATE}
    if action == "approve":
        after["status"] = "approved"
    elif action == "reject":
        after["status"] = "rejected"
    elif action == "swap":
        after.update(status="approved",
                     chosen_candidate_id=before["rejected_candidate_id"], rejected_candidate_id=before["chosen_candidate_id"],
                     chosen_text=before["rejected_text"], rejected_text=before["chosen_text"])
    elif action in ("pick_chosen", "pick_rejected"):
        cid = chosen_candidate_id if action == "pick_chosen" else rejected_candidate_id
        cand = _candidate(cur, cid) if cid else None
        if cand is None or (cand[0], cand[1]) != (run_id, item_id):
            raise WorkspaceError(f"{cid!r} is not a candidate of this pair's item")
        other = before["rejected_candidate_id"] if action == "pick_chosen" else before["chosen_candidate_id"]
        if cid == other:
            raise WorkspaceError("chosen and rejected would be the same candidate: use swap")
        side = "chosen" if action == "pick_chosen" else "rejected"
        after[f"{side}_candidate_id"], after[f"{side}_text"] = cid, cand[2]
    elif action == "edit_chosen":
        if not chosen_text or not chosen_text.strip():
            raise WorkspaceError("a corrected chosen text cannot be empty")
        after.update(chosen_candidate_id=None, chosen_text=chosen_text)
    after["version"] = before["version"] + 1
    return after


@_serialized
def decide(
    ws,
    pair_id: str,
    action: str,
    reviewer: str,
    expected_version: int,
    chosen_candidate_id: str | None = None,
    rejected_candidate_id: str | None = None,
    chosen_text: str | None = None,
    bulk: bool = False,
) -> dict:
    """Apply one decision against the version the reviewer saw; returns the pair's state after it.

    approve/reject/swap close the pair (swap approves the swapped pair); pick_*/edit_chosen change it
    and leave it open; skip records only; undo restores the state before this reviewer's last
    decision on the pair. A pair already decided and sent to a second reviewer takes that reviewer's
    decision as a round-2 record (for agreement) without changing the pair.
    """
    if action not in ACTIONS:
        raise WorkspaceError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise WorkspaceError("a decision needs a reviewer name")
    cur = ws.cursor()
    cur.execute("BEGIN")
    try:
        before = _state(cur, pair_id)
        if before is None:
            raise WorkspaceError(f"no pair {pair_id!r}")
        if before["version"] != expected_version:
            raise Conflict(pair_id, before, _last_decision(cur, pair_id))
        pair = (before["run_id"], before["item_id"])
        undoes, round_ = None, 1
        if action == "undo":
            last = cur.execute(
                """SELECT decision_id, action, before, after FROM decisions d
                   WHERE pair_id = ? AND reviewer = ? AND round = 1 AND action NOT IN ('skip', 'undo')
                     AND NOT EXISTS (SELECT 1 FROM decisions u WHERE u.undoes = d.decision_id)
                   ORDER BY created_at DESC LIMIT 1""",
                [pair_id, reviewer],
            ).fetchone()
            if last is None:
                raise WorkspaceError(f"nothing of {reviewer}'s to undo on pair {pair_id}")
            undoes, undone_action = last[0], last[1]
            if json.loads(last[3])["version"] != before["version"]:
                raise Conflict(pair_id, before, _last_decision(cur, pair_id))
            after = {**json.loads(last[2]), "version": before["version"] + 1}
        elif action == "skip":
            after = {k: before[k] for k in STATE}
        else:
            after = _changed_pair(cur, before, pair, action, reviewer, chosen_candidate_id, rejected_candidate_id, chosen_text)
            if before["status"] != "pending" and before["second_review"]:
                first = cur.execute("SELECT DISTINCT reviewer FROM decisions WHERE pair_id = ? AND round = 1 AND action <> 'skip'",
                                    [pair_id]).fetchall()
                if first and reviewer not in {r[0] for r in first}:
                    round_ = 2
        t = now()
        if action != "skip" and round_ == 1:
            n = cur.execute(
                # A pair left open (pick, edit, undo) stays claimed by this reviewer, who is still looking at it.
                """UPDATE pairs SET status = ?, chosen_candidate_id = ?, rejected_candidate_id = ?, chosen_text = ?,
                     rejected_text = ?, version = version + 1, updated_by = ?, updated_at = ?,
                     claimed_by = CASE WHEN ? = 'pending' THEN ? END, claimed_at = CASE WHEN ? = 'pending' THEN ? END
                   WHERE pair_id = ? AND version = ?""",
                [after["status"], after["chosen_candidate_id"], after["rejected_candidate_id"], after["chosen_text"],
                 after["rejected_text"], reviewer, t, after["status"], reviewer, after["status"], t, pair_id, expected_version],
            ).fetchone()[0]
            if n == 0:
                raise Conflict(pair_id, _state(cur, pair_id), _last_decision(cur, pair_id))
        elif action == "skip":
            cur.execute("UPDATE pairs SET claimed_by = NULL, claimed_at = NULL WHERE pair_id = ? AND claimed_by = ?", [pair_id, reviewer])
        decision_id = uuid.uuid4().hex
        snap = {k: before[k] for k in STATE}
        cur.execute(
            "INSERT INTO decisions (decision_id, pair_id, reviewer, action, before, after, created_at, round, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [decision_id, pair_id, reviewer, ("bulk_" if bulk else "") + action, json.dumps(snap), json.dumps(after), t, round_, undoes],
        )
        if round_ == 1 and (action in OVERRIDES or (action == "undo" and undone_action.removeprefix("bulk_") in OVERRIDES)):
            cur.execute(
                "INSERT INTO audit_log (audit_id, pair_id, reviewer, kind, before, after, created_at, decision_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [uuid.uuid4().hex, pair_id, reviewer, ("bulk_" if bulk else "") + action, json.dumps(snap), json.dumps(after), t, decision_id],
            )
        cur.execute("COMMIT")
    except duckdb.TransactionException:
        cur.execute("ROLLBACK")
        raise Conflict(pair_id, _state(ws.cursor(), pair_id), _last_decision(ws.cursor(), pair_id)) from None
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return after if round_ == 1 else {k: before[k] for k in STATE}


def last_decided_pair(ws, reviewer: str) -> str | None:
    """The pair of this reviewer's latest decision that undo can still revert (the Undo key's target)."""
    row = ws.cursor().execute(
        """SELECT pair_id FROM decisions d WHERE reviewer = ? AND round = 1 AND action NOT IN ('skip', 'undo')
             AND NOT EXISTS (SELECT 1 FROM decisions u WHERE u.undoes = d.decision_id)
           ORDER BY created_at DESC LIMIT 1""",
        [reviewer],
    ).fetchone()
    return row[0] if row else None


def audit_log(ws, pair_id: str | None = None, limit: int = 200) -> list[dict]:
    """The audit log, newest first (optionally one pair's)."""
    rows = ws.cursor().execute(
        "SELECT created_at, reviewer, kind, pair_id, before, after FROM audit_log WHERE ? IS NULL OR pair_id = ? ORDER BY created_at DESC LIMIT ?",
        [pair_id, pair_id, limit],
    ).fetchall()
    return [{"created_at": r[0], "reviewer": r[1], "kind": r[2], "pair_id": r[3], "before": json.loads(r[4]), "after": json.loads(r[5])} for r in rows]
