"""Progress, judge–human and reviewer–reviewer agreement, second reviews and bulk decisions."""

from __future__ import annotations

import hashlib
import json

from core.review.decisions import STATE, Conflict, decide
from core.review.queue import QueueFilter
from core.store import WorkspaceError, write
from core.store import review as store


def progress(ws, run: str | None = None) -> dict:
    """Done / left for a run (or all), and decisions per reviewer."""
    total, pending, approved, rejected, per = store.progress_counts(ws.cursor(), run)
    return {"total": total, "done": total - pending, "left": pending, "approved": approved, "rejected": rejected,
            "per_reviewer": per}


def _outcome(before: dict, after: dict) -> str:
    """How a human's final pair differs from the judge's proposal: as_proposed, swapped, rejected, other_chosen, other_rejected."""
    if after["status"] == "rejected":
        return "rejected"
    if after["chosen_candidate_id"] == before["rejected_candidate_id"] and after["rejected_candidate_id"] == before["chosen_candidate_id"] \
            and before["chosen_candidate_id"] is not None:
        return "swapped"
    if after["chosen_candidate_id"] != before["chosen_candidate_id"] or after["chosen_text"] != before["chosen_text"]:
        return "other_chosen"
    if after["rejected_candidate_id"] != before["rejected_candidate_id"]:
        return "other_rejected"
    return "as_proposed"


def agreement(ws, run: str | None = None) -> dict:
    """Judge–human agreement (override rate and direction, per criterion) and reviewer–reviewer agreement."""
    cur = ws.cursor()
    rows = store.agreement_rows(cur, run)
    outcomes: dict[str, int] = {}
    crit: dict[str, list[int]] = {}
    # Every judgment of the approved pairs' candidates in one query (one per pair was seconds at 1,000 decisions).
    judged = store.all_judgments_for(cur, [r[3 + i] for r in rows if r[2] == "approved" for i in (0, 1) if r[3 + i]])

    def scores_of(cid, judge_run):  # as _scores: the pair's judging run first, then the latest
        js = judged.get(cid)
        if not js:
            return None
        j = max(js, key=lambda j: (j[4] == (judge_run or ""), j[5] is not None, j[5] or 0))
        return {"scores": json.loads(j[0]) if j[0] else {}, "overall": j[1], "rationale": j[2], "error": j[3], "judge_run": j[4]}

    for pid, first_before, *state, judge_run in rows:
        after = dict(zip(STATE, state[: len(STATE)]))
        o = _outcome(json.loads(first_before), after)
        outcomes[o] = outcomes.get(o, 0) + 1
        if after["status"] != "approved":
            continue
        c, r = scores_of(after["chosen_candidate_id"], judge_run), scores_of(after["rejected_candidate_id"], judge_run)
        if not c or not r:
            continue
        for name, cs in c["scores"].items():
            rs = r["scores"].get(name)
            if isinstance(cs, (int, float)) and isinstance(rs, (int, float)) and cs != rs:
                crit.setdefault(name, []).append(int(cs > rs))  # the judge prefers the human's chosen on this criterion
    decided = sum(outcomes.values())
    overridden = decided - outcomes.get("as_proposed", 0)
    twice = store.reviewed_twice(cur, run)
    norm = lambda a: (a or "").removeprefix("bulk_")  # noqa: E731
    agree = sum(norm(a) == norm(b) for _, a, b in twice)
    return {
        "decided": decided, "overridden": overridden, "override_rate": overridden / decided if decided else None,
        "outcomes": outcomes,
        "per_criterion": {k: {"pairs": len(v), "judge_agrees": sum(v) / len(v)} for k, v in sorted(crit.items())},
        "reviewed_twice": len(twice), "reviewer_agreement": agree / len(twice) if twice else None,
    }


def send_to_second_review(ws, run: str | None, share: float) -> int:
    """Mark a stable share of a run's pairs (by a hash of the pair id) for a second reviewer. Returns how many."""
    if not 0 <= share <= 1:
        raise WorkspaceError("the second-review share must be between 0 and 1")
    with write(ws) as cur:
        chosen = [p for p in store.pair_ids(cur, run) if int(hashlib.md5(p.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share]
        store.second_review(cur, run, chosen)
    return len(chosen)


def bulk(ws, flt: QueueFilter, action: str, reviewer: str) -> dict:
    """Approve (or reject) every pending pair matching the filter, each audited like a single decision.

    Each decision is its own trip through the write door: reviewers at work interleave with a long bulk,
    and a pair someone changed meanwhile is a conflict left out, not the end of the bulk."""
    if action not in ("approve", "reject"):
        raise WorkspaceError("bulk actions are approve or reject")
    flt = QueueFilter(**{**flt.__dict__, "status": "pending"})
    rows = store.queue_pairs(ws.cursor(), *store.queue_where(flt))
    done, conflicts = 0, []
    for pair_id, version in rows:
        try:
            decide(ws, pair_id, action, reviewer, version, bulk=True)
            done += 1
        except Conflict:
            conflicts.append(pair_id)
    return {"action": action, "matched": len(rows), "decided": done, "conflicts": conflicts, "reviewer": reviewer}
