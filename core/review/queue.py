"""The review queue: filters, leases so concurrent reviewers get different pairs, what a pair's pane shows."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import timedelta

from core.config import option
from core.review.decisions import LEASE_S
from core.store import WorkspaceError, now, write
from core.store import review as store


@dataclass
class QueueFilter:
    """Which pairs a review queue (or a bulk action, or an export) covers."""

    run: str | None = option(None, "sampling run whose pairs are reviewed (None: every run)")
    status: str = option("pending", "pending (to review), approved, rejected, or any")
    degenerate_only: bool = option(False, "only pairs whose rejected is a degenerate candidate")
    close_calls: bool = option(False, "only pairs whose judge scores of chosen and rejected are within max_margin")
    max_margin: float = option(0.15, "the score gap below which a pair is a judge close call")
    overridden: bool = option(False, "only pairs with an override in the audit log")
    reviewer: str | None = option(None, "only pairs this reviewer decided")
    family: str | None = option(None, "only pairs sampled from a model of this family")
    stage: str | None = option(None, "only pairs sampled from a model of this stage")

    @classmethod
    def parse(cls, exprs: list[str], **base) -> "QueueFilter":
        """From `key=value` strings (the CLI's --filter), e.g. degenerate_only=true, family=llama."""
        types = {f.name: f.type for f in fields(cls)}
        out = dict(base)
        for expr in exprs:
            key, sep, value = expr.partition("=")
            key = key.strip().replace("-", "_")
            if key not in types:
                raise WorkspaceError(f"unknown filter {key!r}: use one of {', '.join(types)}")
            kind = str(types[key])
            if "bool" in kind:
                out[key] = (value.strip().lower() in ("1", "true", "yes", "")) if sep else True
            elif "float" in kind:
                out[key] = float(value)
            else:
                out[key] = value.strip() or None
        flt = cls(**out)
        if flt.status not in ("pending", "approved", "rejected", "any"):
            raise WorkspaceError(f"unknown status {flt.status!r}: use pending, approved, rejected or any")
        return flt


def next_pair(ws, flt: QueueFilter, reviewer: str, lease_s: int = LEASE_S) -> str | None:
    """Claim the next pair of the queue for this reviewer (their current claim first); None when done.

    A claim is a lease: a pair claimed by someone else in the last `lease_s` seconds is not handed
    out, so concurrent reviewers work on different pairs. Pairs this reviewer skipped come last.
    """
    where, params = store.queue_where(flt, reviewer)
    t = now()
    expired = t - timedelta(seconds=lease_s)
    cur = ws.cursor()
    for _ in range(100):
        rows = store.queue_candidates(cur, where, params, reviewer, expired)
        with write(ws) as w:
            if not rows:
                # Re-ask under the lock: a pair freed between the query above and now must not read as "done".
                if store.queue_has_free(w, where, params, reviewer, expired):
                    continue
                store.release_claims(w, reviewer)
                return None
            pair_id, version, claimed_by, claimed_at, second = rows[0]
            # Unchanged since the query above? Someone may have decided or claimed it in between.
            if not store.pair_unchanged(w, pair_id, version, claimed_by, claimed_at):
                continue
            if second and not store.in_queue(w, where, params, pair_id):
                continue  # its second review was just given by someone else
            store.claim(w, pair_id, reviewer, t)
            return pair_id
    return None


def claim_queue(ws, flt: QueueFilter, reviewer: str, n: int, lease_s: int = LEASE_S) -> list[tuple[str, int]]:
    """Claim the next ``n`` pairs of the queue for this reviewer at once (the pairs their browser keeps
    ready, so a decision shows the next one without waiting): the pairs they hold first, in the
    queue's order; every other claim of theirs is given back. Returns (pair_id, version) in order. Leases as in :func:`next_pair`; the
    query and the claims are one transaction under the write door, so two reviewers never get the same pair."""
    where, params = store.queue_where(flt, reviewer)
    t = now()
    with write(ws) as w:
        rows = store.queue_candidates(w, where, params, reviewer, t - timedelta(seconds=lease_s), limit=n)
        store.hold_claims(w, [r[0] for r in rows], reviewer, t)
    return [(r[0], r[1]) for r in rows]


def release(ws, reviewer: str) -> None:
    """Give back this reviewer's claim (leaving the page, changing queue)."""
    with write(ws) as cur:
        store.release_claims(cur, reviewer)


def pair_view(ws, pair_id: str) -> dict | None:
    """Everything the review page shows for one pair: the document, both sides with loops and scores, the alternatives."""
    cur = ws.cursor()
    v = store.pair_row(cur, pair_id)
    if v is None:
        return None
    judge_run = v.pop("judge_run")
    v["provenance"] = json.loads(v["provenance"]) if v["provenance"] else {}
    cands = store.item_candidates(cur, v["run_id"], v["item_id"])
    judged = store.judgments_for(cur, [c[0] for c in cands], judge_run)
    v["candidates"] = []
    for c in cands:
        scores, overall, rationale, error, run = judged.get(c[0], (None,) * 5)
        v["candidates"].append(
            {"candidate_id": c[0], "sample_index": c[1], "finish_reason": c[2], "degenerate": c[3], "has_loop": c[4],
             "loops": json.loads(c[5]) if c[5] else [], "n_tokens": c[6], "chars": c[7], "preview": c[8] or "",
             "judgment": None if run is None else {"scores": json.loads(scores) if scores else {}, "overall": overall,
                                                   "rationale": rationale, "error": error, "judge_run": run}})
    by_id = {c["candidate_id"]: c for c in v["candidates"]}
    for side in ("chosen", "rejected"):
        cid = v[f"{side}_candidate_id"]
        v[side] = {"candidate_id": cid, "text": v[f"{side}_text"] or "",
                   **{k: by_id.get(cid, {}).get(k) for k in ("finish_reason", "degenerate", "loops", "judgment")}}
        v[side]["loops"] = v[side]["loops"] or []
    return v


def families_and_stages(ws) -> tuple[list[str], list[str]]:
    """The families and stages of models that produced pairs (the queue's filter choices)."""
    rows = store.queue_families_and_stages(ws.cursor())
    return sorted({f for f, _ in rows if f}), sorted({s for _, s in rows if s})


def pair_runs(ws) -> dict[str, int]:
    """Sampling runs that have pairs (the queue's run choices)."""
    return store.pair_runs(ws.cursor())
