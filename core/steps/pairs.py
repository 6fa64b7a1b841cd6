"""Mining a judging run into pending pairs (the rule itself is core.policy.mining)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict

from core.policy.mining import Candidate, PairPolicy, mine_item
from core.store import WorkspaceError, now, sizes
from core.store import items as store_items
from core.store import judgments as store_judgments
from core.store import pairs as store_pairs
from core.store import runs


def _candidates_by_item(ws, judge_run: str) -> dict[tuple[str, str], list[Candidate]]:
    """The judged candidates per item, without their texts: mining needs ids and scores; the texts of the
    mined pairs are joined in SQL as they are written (800k texts in Python took a minute and 4 GB)."""
    t = store_judgments.judged_candidates(ws, judge_run)
    out: dict[tuple[str, str], list[Candidate]] = {}
    for dataset, item_id, cid, overall, degenerate, reason in zip(*(col.to_pylist() for col in t.columns)):
        out.setdefault((dataset, item_id), []).append(Candidate(cid, "", overall, degenerate, reason))
    return out


_previews: dict[tuple, dict] = {}


def mine_run(ws, judge_run: str, policy: PairPolicy, write: bool = True) -> dict:
    """Mine a judging run. With write=False only the counts (the page's preview).

    Re-mining is idempotent: pair ids derive from (sampling run, item, rejected candidate), and a
    pair that exists (perhaps already reviewed) is never overwritten.
    """
    run = runs.get_run(ws, judge_run)
    if not run or run["kind"] != "judge" or not run["source_run"]:
        raise WorkspaceError(f"{judge_run!r} is not a judging run")
    sample_run = run["source_run"]
    # The preview is kept per (store, run, policy, table sizes): a page rerun with the same policy is free
    # (mining 800k candidates takes seconds); judgments and candidates are only ever inserted.
    key = (str(ws.db_path), judge_run, tuple(asdict(policy).items()),
           *sizes(ws.cursor(), "judgments", "candidates"))
    if not write and key in _previews:
        return dict(_previews[key])
    by_item = _candidates_by_item(ws, judge_run)
    refs = store_items.references_of_run(ws, sample_run) if policy.reference_as_chosen else {}
    reasons: Counter = Counter()
    rows, kinds = [], Counter()
    policy_dict = asdict(policy)
    for (dataset, item_id), cands in sorted(by_item.items()):
        pairs, reason = mine_item(item_id, cands, policy, refs.get(item_id))
        if reason:
            reasons[reason] += 1
            continue
        for p in pairs:
            kinds[p.reason] += 1
            rows.append({
                "pair_id": f"{sample_run}:{item_id}:{p.rejected.candidate_id.rsplit(':', 1)[-1]}",
                "run_id": sample_run, "dataset": dataset, "item_id": item_id,
                "chosen_candidate_id": p.chosen.candidate_id if p.chosen else None,
                "rejected_candidate_id": p.rejected.candidate_id,
                "chosen_text": None if p.chosen else p.chosen_text,  # a candidate's text (and the prompt) come from the store
                "status": "pending", "judge_run": judge_run, "rejected_because": p.reason,
                "chosen_score": p.chosen.overall if p.chosen else None, "rejected_score": p.rejected.overall,
                "provenance": json.dumps({
                    "source": "auto", "judge_run": judge_run, "policy": policy_dict, "rejected_because": p.reason,
                    "chosen_score": p.chosen.overall if p.chosen else None, "chosen_is_reference": p.chosen is None,
                    "rejected_score": p.rejected.overall, "rejected_finish_reason": p.rejected.finish_reason,
                }),
                "version": 0, "updated_by": "miner", "updated_at": now(),
            })
    items_with_pairs = len({r["item_id"] for r in rows})
    summary = {
        "judge_run": judge_run, "sample_run": sample_run, "items": len(by_item), "items_with_pairs": items_with_pairs,
        "pairs": len(rows), "rejected_degenerate": kinds["degenerate"], "rejected_margin": kinds["margin"],
        "no_pair": dict(reasons), "new": 0,
    }
    if len(_previews) > 32:
        _previews.clear()
    _previews[key] = dict(summary)
    if write and rows:
        summary["new"] = store_pairs.insert_mined(ws, rows)
    return summary
