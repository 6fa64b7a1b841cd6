"""Review: people decide the mined pairs, one keystroke each, without overwriting each other.

Every decision is a row in ``decisions`` (reviewer, time, action, the pair's state before and
after). Every decision that departs from what the judge proposed (reject, swap, another candidate,
an edited chosen, and the undo of any of these) is also a row in ``audit_log``; neither table is
ever updated or deleted from, so the history can be read back whole.

Concurrency is optimistic: a reviewer decides against the pair's ``version`` they saw; if someone
changed the pair since, :class:`Conflict` carries the current state and the reviewer chooses again.
The queue hands out pairs with a short lease (``claimed_by``/``claimed_at``) so that two reviewers
working the same queue get different pairs.

Every write goes through the store's write door (:func:`core.store.write`), so each decision's
version check and its writes are one transaction that sees every earlier write of this process.
"""

from __future__ import annotations

import json
import uuid

import duckdb

from core.store import WorkspaceError, now, write
from core.store import review as store
from core.store.review import STATE

ACTIONS = ("approve", "reject", "swap", "skip", "undo", "pick_chosen", "pick_rejected", "edit_chosen")


# Decisions that change what the judge proposed: each is also written to the audit log.
OVERRIDES = ("reject", "swap", "pick_chosen", "pick_rejected", "edit_chosen")


LEASE_S = 300


class Conflict(WorkspaceError):
    """The pair changed since the reviewer saw it; `current` is its state now, `last` who changed it."""

    def __init__(self, pair_id: str, current: dict, last: dict | None):
        who = f" by {last['reviewer']} ({last['action']})" if last else ""
        super().__init__(f"pair {pair_id} changed since you opened it{who}: look at it again and choose")
        self.pair_id, self.current, self.last = pair_id, current, last


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
        cand = store.candidate(cur, cid) if cid else None
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
    decision_id: str | None = None,
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
    try:
        with write(ws) as cur:
            if decision_id and (done := store.decision_after(cur, decision_id)):
                return json.loads(done[1])
            return _decide(cur, pair_id, action, reviewer, expected_version, chosen_candidate_id, rejected_candidate_id,
                           chosen_text, bulk, decision_id)
    except duckdb.TransactionException:
        cur = ws.cursor()
        raise Conflict(pair_id, store.pair_state(cur, pair_id), store.last_decision(cur, pair_id)) from None


def _decide(cur, pair_id, action, reviewer, expected_version, chosen_candidate_id, rejected_candidate_id, chosen_text, bulk,
            decision_id=None) -> dict:
    before = store.pair_state(cur, pair_id)
    if before is None:
        raise WorkspaceError(f"no pair {pair_id!r}")
    if before["version"] != expected_version:
        raise Conflict(pair_id, before, store.last_decision(cur, pair_id))
    pair = (before["run_id"], before["item_id"])
    undoes, round_ = None, 1
    if action == "undo":
        last = store.undoable_decision(cur, pair_id, reviewer)
        if last is None:
            raise WorkspaceError(f"nothing of {reviewer}'s to undo on pair {pair_id}")
        undoes, undone_action = last[0], last[1]
        if json.loads(last[3])["version"] != before["version"]:
            raise Conflict(pair_id, before, store.last_decision(cur, pair_id))
        after = {**json.loads(last[2]), "version": before["version"] + 1}
    elif action == "skip":
        after = {k: before[k] for k in STATE}
    else:
        after = _changed_pair(cur, before, pair, action, reviewer, chosen_candidate_id, rejected_candidate_id, chosen_text)
        if before["status"] != "pending" and before["second_review"]:
            first = store.first_round_reviewers(cur, pair_id)
            if first and reviewer not in first:
                round_ = 2
    t = now()
    if action != "skip" and round_ == 1:
        if store.update_pair_state(cur, pair_id, expected_version, after, reviewer, t) == 0:
            raise Conflict(pair_id, store.pair_state(cur, pair_id), store.last_decision(cur, pair_id))
    elif action == "skip":
        store.release_claim(cur, pair_id, reviewer)
    decision_id = decision_id or uuid.uuid4().hex
    snap = {k: before[k] for k in STATE}
    kind = ("bulk_" if bulk else "") + action
    store.insert_decision(cur, decision_id, pair_id, reviewer, kind, snap, after, t, round_, undoes)
    if round_ == 1 and (action in OVERRIDES or (action == "undo" and undone_action.removeprefix("bulk_") in OVERRIDES)):
        store.insert_audit(cur, uuid.uuid4().hex, pair_id, reviewer, kind, snap, after, t, decision_id)
    return after if round_ == 1 else snap


def apply_decisions(ws, reviewer: str, decisions: list[dict]) -> list[dict]:
    """Decisions a reviewer's browser made ahead of the server, in the order made; each is
    ``{"id", "pair_id", "action", "version", ...decide()'s keywords}`` (``undo_last`` undoes the
    reviewer's latest decision, wherever it was). Returns one ``{"id", "pair_id", "ok", "reason",
    "state"}`` per decision: a refused one (a conflict, nothing to undo, a bad pick) says why and
    changes nothing, and the rest are still applied."""
    out = []
    for d in decisions:
        pair_id, action = d.get("pair_id"), d.get("action")
        r = {"id": d.get("id"), "pair_id": pair_id, "ok": False, "reason": None, "state": None}
        try:
            if action == "undo_last":
                pair_id = r["pair_id"] = last_decided_pair(ws, reviewer)
                if pair_id is None:
                    raise WorkspaceError("nothing of yours to undo")
                version, action = store.pair_state(ws.cursor(), pair_id)["version"], "undo"
            else:
                version = int(d.get("version"))
            r["state"] = decide(ws, str(pair_id), str(action), reviewer, version,
                                chosen_candidate_id=d.get("chosen_candidate_id"), rejected_candidate_id=d.get("rejected_candidate_id"),
                                chosen_text=d.get("chosen_text"), decision_id=str(d["id"]) if d.get("id") else None)
            r["ok"] = True
        except Conflict as e:
            r["reason"], r["state"] = str(e), e.current
        except (WorkspaceError, TypeError, ValueError) as e:
            r["reason"] = str(e)
        out.append(r)
    return out


def last_decided_pair(ws, reviewer: str) -> str | None:
    """The pair of this reviewer's latest decision that undo can still revert (the Undo key's target)."""
    return store.last_undoable_pair(ws.cursor(), reviewer)


def audit_log(ws, pair_id: str | None = None, limit: int = 200) -> list[dict]:
    """The audit log, newest first (optionally one pair's)."""
    return store.audit_log(ws.cursor(), pair_id, limit)
