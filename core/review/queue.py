"""The review queue: filters, leases so concurrent reviewers get different pairs, what a pair's pane shows."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import timedelta

from core.config import option
from core.review.decisions import LEASE_S, STATE, _serialized, _write_lock
from core.store import WorkspaceError, now


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


def _where(flt: QueueFilter, reviewer: str | None = None) -> tuple[str, list]:
    """SQL condition over `pairs p` (joined to `runs r` and `models m`) for a filter."""
    where, params = ["1=1"], []
    if flt.run:
        where.append("p.run_id = ?")
        params.append(flt.run)
    if flt.status == "pending":
        # To review: pending pairs, and decided pairs sent to a second reviewer that this reviewer has not seen.
        second = "FALSE"
        if reviewer:
            # Uncorrelated IN subqueries, here and below: a correlated EXISTS is decorrelated into a join and a
            # group-by over every pair of the queue (3× slower on 77k pending pairs, bench/bench_review.py).
            second = """(p.second_review AND p.status <> 'pending'
                AND p.pair_id NOT IN (SELECT pair_id FROM decisions WHERE reviewer = ? OR round = 2))"""
            params.append(reviewer)
        where.append(f"(p.status = 'pending' OR {second})")
    elif flt.status != "any":
        where.append("p.status = ?")
        params.append(flt.status)
    if flt.degenerate_only:
        where.append("json_extract_string(p.provenance, '$.rejected_because') = 'degenerate'")
    if flt.close_calls:
        where.append("abs(TRY_CAST(json_extract_string(p.provenance, '$.chosen_score') AS DOUBLE)"
                     " - TRY_CAST(json_extract_string(p.provenance, '$.rejected_score') AS DOUBLE)) <= ?")
        params.append(flt.max_margin)
    if flt.overridden:
        where.append("p.pair_id IN (SELECT pair_id FROM audit_log)")
    if flt.reviewer:
        where.append("p.pair_id IN (SELECT pair_id FROM decisions WHERE reviewer = ?)")
        params.append(flt.reviewer)
    if flt.family:
        where.append("m.family = ?")
        params.append(flt.family)
    if flt.stage:
        where.append("m.stage = ?")
        params.append(flt.stage)
    return " AND ".join(where), params


_FROM = "pairs p LEFT JOIN runs r ON r.run_id = p.run_id LEFT JOIN models m ON m.name = r.model"


def next_pair(ws, flt: QueueFilter, reviewer: str, lease_s: int = LEASE_S) -> str | None:
    """Claim the next pair of the queue for this reviewer (their current claim first); None when done.

    A claim is a lease: a pair claimed by someone else in the last `lease_s` seconds is not handed
    out, so concurrent reviewers work on different pairs. Pairs this reviewer skipped come last.
    """
    where, params = _where(flt, reviewer)
    t = now()
    expired = t - timedelta(seconds=lease_s)
    cur = ws.cursor()
    free = "(p.claimed_by IS NULL OR p.claimed_by = ? OR p.claimed_at < ?)"
    for _ in range(100):
        rows = cur.execute(
            f"""SELECT p.pair_id, p.version, p.claimed_by, p.claimed_at, p.second_review AND p.status <> 'pending'
                FROM {_FROM} WHERE {where} AND {free}
                ORDER BY p.claimed_by IS NOT DISTINCT FROM ? DESC,
                  p.pair_id IN (SELECT pair_id FROM decisions WHERE reviewer = ?), p.pair_id
                LIMIT 1""",
            params + [reviewer, expired, reviewer, reviewer],
        ).fetchall()
        with _write_lock(ws):
            if not rows:
                # Re-ask under the lock: a pair freed between the query above and now must not read as "done".
                if cur.execute(f"SELECT 1 FROM {_FROM} WHERE {where} AND {free} LIMIT 1", params + [reviewer, expired]).fetchall():
                    continue
                cur.execute("UPDATE pairs SET claimed_by = NULL, claimed_at = NULL WHERE claimed_by = ?", [reviewer])
                return None
            pair_id, version, claimed_by, claimed_at, second = rows[0]
            # Unchanged since the query above? Someone may have decided or claimed it in between.
            if not cur.execute("SELECT 1 FROM pairs WHERE pair_id = ? AND version = ? AND claimed_by IS NOT DISTINCT FROM ? "
                               "AND claimed_at IS NOT DISTINCT FROM ?", [pair_id, version, claimed_by, claimed_at]).fetchall():
                continue
            if second and not cur.execute(f"SELECT 1 FROM {_FROM} WHERE {where} AND p.pair_id = ?", params + [pair_id]).fetchall():
                continue  # its second review was just given by someone else
            # Claim it and give back any other claim of this reviewer, in one statement.
            cur.execute(
                """UPDATE pairs SET claimed_by = CASE WHEN pair_id = ? THEN ? END, claimed_at = CASE WHEN pair_id = ? THEN ? END
                   WHERE pair_id = ? OR (claimed_by = ? AND pair_id <> ?)""",
                [pair_id, reviewer, pair_id, t, pair_id, reviewer, pair_id],
            )
            return pair_id
    return None


@_serialized
def release(ws, reviewer: str) -> None:
    """Give back this reviewer's claim (leaving the page, changing queue)."""
    ws.cursor().execute("UPDATE pairs SET claimed_by = NULL, claimed_at = NULL WHERE claimed_by = ?", [reviewer])


def pair_view(ws, pair_id: str) -> dict | None:
    """Everything the review page shows for one pair: the document, both sides with loops and scores, the alternatives."""
    cur = ws.cursor()
    row = cur.execute(
        f"""SELECT p.pair_id, p.run_id, p.dataset, p.item_id, p.provenance, p.second_review, p.updated_by, {', '.join('p.' + k for k in STATE)},
                   i.text, i.reference, i.image_path
            FROM pairs p LEFT JOIN items i ON i.dataset = p.dataset AND i.item_id = p.item_id WHERE p.pair_id = ?""",
        [pair_id],
    ).fetchone()
    if row is None:
        return None
    keys = ("pair_id", "run_id", "dataset", "item_id", "provenance", "second_review", "updated_by", *STATE, "document", "reference", "image_path")
    v = dict(zip(keys, row))
    v["provenance"] = json.loads(v["provenance"]) if v["provenance"] else {}
    judge_run = v["provenance"].get("judge_run")
    cands = cur.execute(
        """SELECT candidate_id, sample_index, finish_reason, degenerate, has_loop, loops, n_tokens, coalesce(chars, length(text))
           FROM candidates WHERE run_id = ? AND item_id = ? ORDER BY sample_index""",
        [v["run_id"], v["item_id"]],
    ).fetchall()
    # Their judgments by a list of ids, so the index on judgments.candidate_id answers (a join would scan them all).
    judged = {r[0]: r[1:] for r in cur.execute(
        f"""SELECT candidate_id, scores, overall, rationale, error, run_id FROM judgments
            WHERE candidate_id IN ({', '.join('?' * len(cands)) or 'NULL'})
            QUALIFY row_number() OVER (PARTITION BY candidate_id ORDER BY run_id = ? DESC, created_at DESC NULLS LAST) = 1""",
        [c[0] for c in cands] + [judge_run or ""],
    ).fetchall()} if cands else {}
    cands = [(*c, *judged.get(c[0], (None,) * 5)) for c in cands]
    v["candidates"] = [
        {"candidate_id": c[0], "sample_index": c[1], "finish_reason": c[2], "degenerate": c[3], "has_loop": c[4],
         "loops": json.loads(c[5]) if c[5] else [], "n_tokens": c[6], "chars": c[7],
         "judgment": None if c[12] is None else {"scores": json.loads(c[8]) if c[8] else {}, "overall": c[9], "rationale": c[10],
                                                  "error": c[11], "judge_run": c[12]}}
        for c in cands
    ]
    by_id = {c["candidate_id"]: c for c in v["candidates"]}
    for side in ("chosen", "rejected"):
        cid = v[f"{side}_candidate_id"]
        v[side] = {"candidate_id": cid, "text": v[f"{side}_text"] or "",
                   **{k: by_id.get(cid, {}).get(k) for k in ("finish_reason", "degenerate", "loops", "judgment")}}
        v[side]["loops"] = v[side]["loops"] or []
    return v


def families_and_stages(ws) -> tuple[list[str], list[str]]:
    """The families and stages of models that produced pairs (the queue's filter choices)."""
    rows = ws.cursor().execute(f"SELECT DISTINCT m.family, m.stage FROM {_FROM}").fetchall()
    return sorted({f for f, _ in rows if f}), sorted({s for _, s in rows if s})
