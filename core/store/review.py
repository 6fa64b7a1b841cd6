"""Queries of review: `pairs` (state, claims, second reviews), `decisions`, `audit_log`, and the reads of
`candidates` and `judgments` that the review pane, agreement and the candidate browser show.

Every function takes a cursor: a write one from :func:`core.store.write` for the writes (the caller
holds the door, so a check and the write after it are one transaction), any cursor for the reads.
"""

from __future__ import annotations

import json

import duckdb

# The columns of a pair that a decision changes (and records before and after).
STATE = ("status", "chosen_candidate_id", "rejected_candidate_id", "chosen_text", "rejected_text", "version")

# A decision still undoable: round 1, not a skip or an undo, and not undone since.
_UNDOABLE = """round = 1 AND action NOT IN ('skip', 'undo')
    AND NOT EXISTS (SELECT 1 FROM decisions u WHERE u.undoes = d.decision_id)"""


# ---------------------------------------------------------------- a pair's state and its decisions

def pair_state(cur: duckdb.DuckDBPyConnection, pair_id: str) -> dict | None:
    """The pair's STATE, plus second_review, run_id and item_id."""
    row = cur.execute(f"SELECT {', '.join(STATE)}, second_review, run_id, item_id FROM pairs WHERE pair_id = ?", [pair_id]).fetchone()
    return dict(zip((*STATE, "second_review", "run_id", "item_id"), row)) if row else None


def last_decision(cur: duckdb.DuckDBPyConnection, pair_id: str) -> dict | None:
    """Who last changed the pair (a Conflict names them)."""
    row = cur.execute(
        "SELECT reviewer, action, created_at FROM decisions WHERE pair_id = ? AND action <> 'skip' ORDER BY created_at DESC LIMIT 1",
        [pair_id],
    ).fetchone()
    return dict(zip(("reviewer", "action", "created_at"), row)) if row else None


def candidate(cur: duckdb.DuckDBPyConnection, candidate_id: str) -> tuple[str, str, str, str] | None:
    """(run_id, item_id, text, finish_reason) of a candidate."""
    return cur.execute("SELECT run_id, item_id, text, finish_reason FROM candidates WHERE candidate_id = ?", [candidate_id]).fetchone()


def undoable_decision(cur: duckdb.DuckDBPyConnection, pair_id: str, reviewer: str) -> tuple | None:
    """(decision_id, action, before, after) of this reviewer's latest decision on the pair that undo can revert."""
    return cur.execute(
        f"SELECT decision_id, action, before, after FROM decisions d WHERE pair_id = ? AND reviewer = ? AND {_UNDOABLE} "
        "ORDER BY created_at DESC LIMIT 1",
        [pair_id, reviewer],
    ).fetchone()


def last_undoable_pair(cur: duckdb.DuckDBPyConnection, reviewer: str) -> str | None:
    """The pair of this reviewer's latest decision that undo can still revert."""
    row = cur.execute(
        f"SELECT pair_id FROM decisions d WHERE reviewer = ? AND {_UNDOABLE} ORDER BY created_at DESC LIMIT 1", [reviewer]
    ).fetchone()
    return row[0] if row else None


def first_round_reviewers(cur: duckdb.DuckDBPyConnection, pair_id: str) -> set[str]:
    """Who decided the pair in round 1 (anyone else deciding it again gives a round-2 review)."""
    return {r[0] for r in cur.execute(
        "SELECT DISTINCT reviewer FROM decisions WHERE pair_id = ? AND round = 1 AND action <> 'skip'", [pair_id]).fetchall()}


def update_pair_state(cur: duckdb.DuckDBPyConnection, pair_id: str, expected_version: int, after: dict, reviewer: str, t) -> int:
    """Write the pair's state after a decision if it is still at `expected_version`; returns the rows changed (0 or 1).

    A pair left open (pick, edit, undo) stays claimed by this reviewer, who is still looking at it."""
    return cur.execute(
        """UPDATE pairs SET status = ?, chosen_candidate_id = ?, rejected_candidate_id = ?, chosen_text = ?,
             rejected_text = ?, version = version + 1, updated_by = ?, updated_at = ?,
             claimed_by = CASE WHEN ? = 'pending' THEN ? END, claimed_at = CASE WHEN ? = 'pending' THEN ? END
           WHERE pair_id = ? AND version = ?""",
        [after["status"], after["chosen_candidate_id"], after["rejected_candidate_id"], after["chosen_text"],
         after["rejected_text"], reviewer, t, after["status"], reviewer, after["status"], t, pair_id, expected_version],
    ).fetchone()[0]


def insert_decision(cur: duckdb.DuckDBPyConnection, decision_id: str, pair_id: str, reviewer: str, action: str,
                    before: dict, after: dict, t, round_: int, undoes: str | None) -> None:
    cur.execute(
        "INSERT INTO decisions (decision_id, pair_id, reviewer, action, before, after, created_at, round, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [decision_id, pair_id, reviewer, action, json.dumps(before), json.dumps(after), t, round_, undoes],
    )


def insert_audit(cur: duckdb.DuckDBPyConnection, audit_id: str, pair_id: str, reviewer: str, kind: str,
                 before: dict, after: dict, t, decision_id: str) -> None:
    cur.execute(
        "INSERT INTO audit_log (audit_id, pair_id, reviewer, kind, before, after, created_at, decision_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [audit_id, pair_id, reviewer, kind, json.dumps(before), json.dumps(after), t, decision_id],
    )


def audit_log(cur: duckdb.DuckDBPyConnection, pair_id: str | None = None, limit: int = 200) -> list[dict]:
    """The audit log, newest first (optionally one pair's)."""
    rows = cur.execute(
        "SELECT created_at, reviewer, kind, pair_id, before, after FROM audit_log WHERE ? IS NULL OR pair_id = ? ORDER BY created_at DESC LIMIT ?",
        [pair_id, pair_id, limit],
    ).fetchall()
    return [{"created_at": r[0], "reviewer": r[1], "kind": r[2], "pair_id": r[3], "before": json.loads(r[4]), "after": json.loads(r[5])}
            for r in rows]


# ---------------------------------------------------------------- the queue: filters and claims

# What a queue's condition ranges over: the pair, its sampling run and that run's model.
QUEUE_FROM = "pairs p LEFT JOIN runs r ON r.run_id = p.run_id LEFT JOIN models m ON m.name = r.model"

# A pair no one else holds: unclaimed, claimed by this reviewer, or a lease that ran out.
_FREE = "(p.claimed_by IS NULL OR p.claimed_by = ? OR p.claimed_at < ?)"


def queue_where(flt, reviewer: str | None = None) -> tuple[str, list]:
    """SQL condition over QUEUE_FROM for a queue filter (core.review.queue.QueueFilter), and its parameters."""
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
        where.append("p.rejected_because = 'degenerate'")
    if flt.close_calls:
        where.append("abs(p.chosen_score - p.rejected_score) <= ?")
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


def queue_candidates(cur: duckdb.DuckDBPyConnection, where: str, params: list, reviewer: str, expired, limit: int = 1) -> list[tuple]:
    """The next free pairs of a queue for this reviewer: (pair_id, version, claimed_by, claimed_at, is a second review).

    Their current claim first, pairs they skipped last, then by id."""
    return cur.execute(
        f"""SELECT p.pair_id, p.version, p.claimed_by, p.claimed_at, p.second_review AND p.status <> 'pending'
            FROM {QUEUE_FROM} WHERE {where} AND {_FREE}
            ORDER BY p.claimed_by IS NOT DISTINCT FROM ? DESC,
              p.pair_id IN (SELECT pair_id FROM decisions WHERE reviewer = ?), p.pair_id
            LIMIT ?""",
        params + [reviewer, expired, reviewer, reviewer, limit],
    ).fetchall()


def queue_has_free(cur: duckdb.DuckDBPyConnection, where: str, params: list, reviewer: str, expired) -> bool:
    return bool(cur.execute(f"SELECT 1 FROM {QUEUE_FROM} WHERE {where} AND {_FREE} LIMIT 1", params + [reviewer, expired]).fetchall())


def in_queue(cur: duckdb.DuckDBPyConnection, where: str, params: list, pair_id: str) -> bool:
    return bool(cur.execute(f"SELECT 1 FROM {QUEUE_FROM} WHERE {where} AND p.pair_id = ?", params + [pair_id]).fetchall())


def queue_pairs(cur: duckdb.DuckDBPyConnection, where: str, params: list) -> list[tuple[str, int]]:
    """(pair_id, version) of every pair a queue covers, by id (a bulk decision's targets)."""
    return cur.execute(f"SELECT p.pair_id, p.version FROM {QUEUE_FROM} WHERE {where} ORDER BY p.pair_id", params).fetchall()


def pair_unchanged(cur: duckdb.DuckDBPyConnection, pair_id: str, version: int, claimed_by, claimed_at) -> bool:
    """Is the pair still at this version and claim (no one decided or claimed it since it was read)?"""
    return bool(cur.execute(
        "SELECT 1 FROM pairs WHERE pair_id = ? AND version = ? AND claimed_by IS NOT DISTINCT FROM ? AND claimed_at IS NOT DISTINCT FROM ?",
        [pair_id, version, claimed_by, claimed_at]).fetchall())


def claim(cur: duckdb.DuckDBPyConnection, pair_id: str, reviewer: str, t) -> None:
    """Claim the pair and give back any other claim of this reviewer, in one statement."""
    cur.execute(
        """UPDATE pairs SET claimed_by = CASE WHEN pair_id = ? THEN ? END, claimed_at = CASE WHEN pair_id = ? THEN ? END
           WHERE pair_id = ? OR (claimed_by = ? AND pair_id <> ?)""",
        [pair_id, reviewer, pair_id, t, pair_id, reviewer, pair_id],
    )


def hold_claims(cur: duckdb.DuckDBPyConnection, pair_ids: list[str], reviewer: str, t) -> None:
    """This reviewer holds exactly these pairs (the next pairs their browser keeps): claims renewed,
    any other claim of theirs given back, in one statement."""
    cur.execute(
        """UPDATE pairs SET claimed_by = CASE WHEN list_contains(?, pair_id) THEN ? END,
                            claimed_at = CASE WHEN list_contains(?, pair_id) THEN ? END
           WHERE list_contains(?, pair_id) OR claimed_by = ?""",
        [pair_ids, reviewer, pair_ids, t, pair_ids, reviewer],
    )


def decision_after(cur: duckdb.DuckDBPyConnection, decision_id: str) -> tuple | None:
    """(pair_id, after as JSON) of a decision already stored: a decision sent twice (a reload, a retry) is applied once."""
    return cur.execute("SELECT pair_id, after FROM decisions WHERE decision_id = ?", [decision_id]).fetchone()


def release_claims(cur: duckdb.DuckDBPyConnection, reviewer: str) -> None:
    cur.execute("UPDATE pairs SET claimed_by = NULL, claimed_at = NULL WHERE claimed_by = ?", [reviewer])


def release_claim(cur: duckdb.DuckDBPyConnection, pair_id: str, reviewer: str) -> None:
    """Give back this reviewer's claim on one pair (a skip)."""
    cur.execute("UPDATE pairs SET claimed_by = NULL, claimed_at = NULL WHERE pair_id = ? AND claimed_by = ?", [pair_id, reviewer])


def pair_runs(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Sampling runs that have pairs, with their pending count: runs with work left first, newest first
    (the review page opens on the run a reviewer came for, not on the oldest finished one)."""
    return dict(cur.execute(
        """SELECT p.run_id, count(*) FILTER (WHERE p.status = 'pending') AS pending FROM pairs p
           LEFT JOIN runs r ON r.run_id = p.run_id GROUP BY p.run_id, r.created_at
           ORDER BY pending > 0 DESC, r.created_at DESC NULLS LAST, p.run_id""").fetchall())


def queue_families_and_stages(cur: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(family, stage) of the models that produced pairs."""
    return cur.execute(f"SELECT DISTINCT m.family, m.stage FROM {QUEUE_FROM}").fetchall()


# ---------------------------------------------------------------- what the pane shows

def pair_row(cur: duckdb.DuckDBPyConnection, pair_id: str) -> dict | None:
    """The pair (provenance still JSON text), its judging run, and its item's text, reference and image."""
    keys = ("pair_id", "run_id", "dataset", "item_id", "provenance", "second_review", "updated_by", *STATE,
            "document", "reference", "image_path", "judge_run")
    row = cur.execute(
        f"""SELECT p.pair_id, p.run_id, p.dataset, p.item_id, p.provenance, p.second_review, p.updated_by, {', '.join('p.' + k for k in STATE)},
                   i.text, i.reference, i.image_path, p.judge_run
            FROM pairs p LEFT JOIN items i ON i.dataset = p.dataset AND i.item_id = p.item_id WHERE p.pair_id = ?""",
        [pair_id],
    ).fetchone()
    return dict(zip(keys, row)) if row else None


def item_candidates(cur: duckdb.DuckDBPyConnection, run_id: str, item_id: str) -> list[tuple]:
    """(candidate_id, sample_index, finish_reason, degenerate, has_loop, loops, n_tokens, chars, first 240 characters)
    of an item's candidates in a run."""
    return cur.execute(
        """SELECT candidate_id, sample_index, finish_reason, degenerate, has_loop, loops, n_tokens, coalesce(chars, length(text)),
                  left(text, 240)
           FROM candidates WHERE run_id = ? AND item_id = ? ORDER BY sample_index""",
        [run_id, item_id],
    ).fetchall()


def judgments_for(cur: duckdb.DuckDBPyConnection, ids: list[str], judge_run: str | None) -> dict[str, tuple]:
    """Each candidate's judgment (scores, overall, rationale, error, judge run): `judge_run`'s first, else the latest.

    By a list of ids, so the index on judgments.candidate_id answers (a join would scan them all)."""
    if not ids:
        return {}
    return {r[0]: r[1:] for r in cur.execute(
        f"""SELECT candidate_id, scores, overall, rationale, error, run_id FROM judgments
            WHERE candidate_id IN ({', '.join('?' * len(ids))})
            QUALIFY row_number() OVER (PARTITION BY candidate_id ORDER BY run_id = ? DESC, created_at DESC NULLS LAST) = 1""",
        list(ids) + [judge_run or ""],
    ).fetchall()}


def all_judgments_for(cur: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, list[list]]:
    """Every judgment of these candidates: candidate_id -> [scores, overall, rationale, error, judge run, created_at], ...

    In chunks of constants, so the index on judgments.candidate_id answers (one query per pair was seconds)."""
    out: dict[str, list] = {}
    for i in range(0, len(ids), 1000):
        chunk = ids[i:i + 1000]
        for cid, *j in cur.execute("SELECT candidate_id, scores, overall, rationale, error, run_id, created_at FROM judgments "
                                   f"WHERE candidate_id IN ({', '.join('?' * len(chunk))})", chunk).fetchall():
            out.setdefault(cid, []).append(j)
    return out


# ---------------------------------------------------------------- progress, agreement, second reviews

def progress_counts(cur: duckdb.DuckDBPyConnection, run: str | None = None) -> tuple[int, int, int, int, dict[str, int]]:
    """(total, pending, approved, rejected) pairs of a run (or all), and pairs decided per reviewer."""
    cond, params = ("WHERE run_id = ?", [run]) if run else ("", [])
    total, pending, approved, rejected = cur.execute(
        f"""SELECT count(*), count(*) FILTER (status = 'pending'), count(*) FILTER (status = 'approved'),
                   count(*) FILTER (status = 'rejected') FROM pairs {cond}""",
        params,
    ).fetchone()
    # Who decided each pair as it stands now (an undone decision no longer counts): the counts add up to done.
    per = cur.execute(
        f"""SELECT updated_by, count(*) FROM pairs WHERE status <> 'pending' {'AND run_id = ?' if run else ''}
            GROUP BY updated_by ORDER BY 2 DESC, 1""",
        params,
    ).fetchall()
    return total, pending, approved, rejected, dict(per)


def agreement_rows(cur: duckdb.DuckDBPyConnection, run: str | None = None) -> list[tuple]:
    """Decided pairs: (pair_id, the state before their first round-1 decision as JSON, *STATE now, judge run)."""
    cond, params = ("AND p.run_id = ?", [run]) if run else ("", [])
    return cur.execute(
        f"""SELECT p.pair_id, first(d.before ORDER BY d.created_at), {', '.join('p.' + k for k in STATE)}, any_value(p.judge_run)
            FROM pairs p JOIN decisions d ON d.pair_id = p.pair_id AND d.round = 1
            WHERE p.status <> 'pending' {cond} GROUP BY ALL""",
        params,
    ).fetchall()


def reviewed_twice(cur: duckdb.DuckDBPyConnection, run: str | None = None) -> list[tuple]:
    """Pairs with a round-2 review: (pair_id, the last round-1 action, the round-2 action)."""
    cond, params = ("AND p.run_id = ?", [run]) if run else ("", [])
    return cur.execute(
        f"""SELECT d1.pair_id,
                   last(d1.action ORDER BY d1.created_at) FILTER (d1.round = 1 AND d1.action NOT IN ('skip', 'undo')),
                   last(d1.action ORDER BY d1.created_at) FILTER (d1.round = 2)
            FROM decisions d1 JOIN pairs p ON p.pair_id = d1.pair_id WHERE 1=1 {cond} GROUP BY d1.pair_id
            HAVING count(*) FILTER (d1.round = 2) > 0""",
        params,
    ).fetchall()


def pair_ids(cur: duckdb.DuckDBPyConnection, run: str | None = None) -> list[str]:
    """Every pair id of a run (or of all runs)."""
    return [r[0] for r in cur.execute("SELECT pair_id FROM pairs WHERE ? IS NULL OR run_id = ?", [run, run]).fetchall()]


def second_review(cur: duckdb.DuckDBPyConnection, run: str | None, chosen: list[str]) -> None:
    """Mark exactly `chosen` of a run's (or all) pairs for a second reviewer, unmarking the rest."""
    cur.execute("UPDATE pairs SET second_review = list_contains(?, pair_id) WHERE ? IS NULL OR run_id = ?", [chosen, run, run])


# ---------------------------------------------------------------- the candidate browser

def candidate_runs(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Runs that have candidates, without a DISTINCT over every candidate."""
    return [r[0] for r in cur.execute(
        "SELECT run_id FROM runs r WHERE EXISTS (SELECT 1 FROM candidates c WHERE c.run_id = r.run_id) ORDER BY 1"
    ).fetchall()]


def candidates_frame(cur: duckdb.DuckDBPyConnection, run: str, has_loop: bool | None = None, finish_reasons: list[str] | None = None,
                     score: tuple[float, float] = (0.0, 1.0), chars: tuple[int, int] | None = None, limit: int = 2000):
    """One row per candidate of a run with its latest overall score, as a DataFrame; filters read the derived narrow columns."""
    where, params = ["c.run_id = ?"], [run]
    if has_loop is not None:
        where.append("c.has_loop = ?")
        params.append(has_loop)
    if finish_reasons:
        where.append("list_contains(?, c.finish_reason)")
        params.append(finish_reasons)
    if score != (0.0, 1.0):
        where.append("c.overall BETWEEN ? AND ?")
        params += list(score)
    if chars:
        where.append("c.chars BETWEEN ? AND ?")
        params += list(chars)
    return cur.execute(
        f"""SELECT c.candidate_id, c.item_id, c.sample_index, c.has_loop, c.degenerate, c.finish_reason, c.n_tokens,
                   c.chars, c.overall, r.model
            FROM candidates c LEFT JOIN runs r ON r.run_id = c.run_id
            WHERE {' AND '.join(where)} ORDER BY c.item_id, c.sample_index LIMIT ?""",
        params + [limit],
    ).df()


def candidate_judgments(cur: duckdb.DuckDBPyConnection, candidate_id: str) -> list[dict]:
    """Every judgment of one candidate, oldest first."""
    rows = cur.execute(
        "SELECT run_id, judge, overall, scores, rationale, error FROM judgments WHERE candidate_id = ? ORDER BY created_at", [candidate_id]
    ).fetchall()
    return [{"judge_run": r[0], "judge": r[1], "overall": r[2], "scores": json.loads(r[3]) if r[3] else {}, "rationale": r[4], "error": r[5]}
            for r in rows]
