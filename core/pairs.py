"""Pair mining: chosen = a judge-validated clean candidate, rejected = the model's own failure.

Per item (DESIGN.md, the seeds' decision): chosen is the best *non-degenerate* candidate whose
score clears a quality floor; rejected is a *degenerate* candidate first (the loops DPO must
unlearn), else a candidate worse than the chosen by at least a margin. Ties and items without a
clear gap yield no pair, and every item without a pair is counted under its reason, so the policy
can be read and tuned. One item may give several pairs (one chosen against several rejected), up to
a limit. The reference may stand in as chosen when no candidate qualifies (off by default: a
reference is not the model's own distribution).

Mining is pure (`mine_item`), so the policy is tested without a store; `mine_run` reads a judging
run, and writes pending pairs unless asked only for the preview counts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

from core.config import option
from core.store import now


@dataclass
class PairPolicy:
    """How pairs are mined from judged candidates."""

    min_chosen: float = option(0.6, "quality floor: a chosen candidate's overall score must reach it")
    min_margin: float = option(0.1, "a non-degenerate rejected must score at least this much below the chosen")
    max_pairs_per_item: int = option(2, "most pairs one item may give (one chosen against several rejected)")
    reference_as_chosen: bool = option(False, "use the reference as chosen when no candidate clears the floor")
    degenerate_only: bool = option(False, "only degenerate candidates may be rejected (no margin-based pairs)")
    chosen_must_finish: bool = option(True, "a chosen candidate must have stopped by itself (finish_reason stop): one cut at the limit is an unfinished transcription, and the EOS appended to chosen would teach the model to stop mid-document")


# Why an item gave no pair.
NO_JUDGMENT = "no usable judgment"
ALL_DEGENERATE = "all candidates degenerate (no clean chosen)"
BELOW_FLOOR = "no clean candidate above the quality floor"
NO_GAP = "no degenerate candidate and no clear gap (ties)"
UNFINISHED = "no clean candidate that stopped by itself (the best ones hit the token limit)"


@dataclass
class Candidate:
    candidate_id: str
    text: str
    overall: float | None
    degenerate: bool
    finish_reason: str | None = None


@dataclass
class Pair:
    item_id: str
    chosen: Candidate | None  # None: the reference stands in
    rejected: Candidate
    chosen_text: str
    reason: str  # "degenerate" or "margin"


def mine_item(item_id: str, cands: list[Candidate], policy: PairPolicy, reference: str | None = None) -> tuple[list[Pair], str | None]:
    """The pairs of one item, or no pair and the reason."""
    judged = [c for c in cands if c.overall is not None]
    if not judged:
        return [], NO_JUDGMENT
    clean = sorted((c for c in judged if not c.degenerate), key=lambda c: (-c.overall, c.candidate_id))
    degenerate = sorted((c for c in cands if c.degenerate), key=lambda c: (c.overall if c.overall is not None else -1, c.candidate_id))
    eligible = [c for c in clean if c.finish_reason == "stop"] if policy.chosen_must_finish else clean
    chosen = eligible[0] if eligible and eligible[0].overall >= policy.min_chosen else None
    if chosen is None:
        if not (policy.reference_as_chosen and reference):
            if not clean:
                return [], ALL_DEGENERATE
            unfinished = any(c.overall >= policy.min_chosen for c in clean) and not any(
                c.overall >= policy.min_chosen for c in eligible)
            return [], UNFINISHED if unfinished else BELOW_FLOOR
        chosen_text = reference
    else:
        chosen_text = chosen.text
    rejected = [(c, "degenerate") for c in degenerate]
    if not policy.degenerate_only:
        top = chosen.overall if chosen else 1.0
        worse = sorted((c for c in clean if c is not chosen and c.overall <= top - policy.min_margin), key=lambda c: (c.overall, c.candidate_id))
        rejected += [(c, "margin") for c in worse]
    if not rejected:
        return [], NO_GAP
    pairs = [Pair(item_id, chosen, r, chosen_text, why) for r, why in rejected[: policy.max_pairs_per_item]]
    return pairs, None


def _candidates_by_item(ws, judge_run: str) -> dict[tuple[str, str], list[Candidate]]:
    """The judged candidates per item, without their texts: mining needs ids and scores; the texts of the
    mined pairs are joined in SQL as they are written (800k texts in Python took a minute and 4 GB)."""
    t = ws.cursor().sql(  # columns through Arrow: a Python tuple per row of 800k was most of mining's time
        """SELECT c.dataset, c.item_id, c.candidate_id, CASE WHEN j.error IS NULL THEN j.overall END AS overall,
                  coalesce(c.degenerate, false) AS degenerate, c.finish_reason
           FROM candidates c JOIN judgments j USING (candidate_id) WHERE j.run_id = $1""",
        params=[judge_run],
    ).to_arrow_table()
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
    cur = ws.cursor()
    source = cur.execute(
        "SELECT json_extract_string(config, '$.source_run') FROM runs WHERE run_id = ? AND kind = 'judge'", [judge_run]
    ).fetchone()
    if not source or not source[0]:
        from core.store import WorkspaceError

        raise WorkspaceError(f"{judge_run!r} is not a judging run")
    sample_run = source[0]
    # The preview is kept per (store, run, policy, table sizes): a page rerun with the same policy is free
    # (mining 800k candidates takes seconds); judgments and candidates are only ever inserted.
    key = (str(ws.db_path), judge_run, tuple(asdict(policy).items()),
           *cur.execute("SELECT (SELECT count(*) FROM judgments), (SELECT count(*) FROM candidates)").fetchall()[0])
    if not write and key in _previews:
        return dict(_previews[key])
    by_item = _candidates_by_item(ws, judge_run)
    refs = dict(cur.execute(
        "SELECT item_id, reference FROM items WHERE (dataset, item_id) IN (SELECT DISTINCT dataset, item_id FROM candidates WHERE run_id = ?)",
        [sample_run],
    ).fetchall()) if policy.reference_as_chosen else {}
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
                "status": "pending",
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
        import pyarrow as pa

        before = cur.execute("SELECT count(*) FROM pairs").fetchall()[0][0]  # fetchall: register needs no open result
        cur.register("mined_pairs", pa.Table.from_pylist(rows))
        try:
            cur.execute(
                """INSERT OR IGNORE INTO pairs BY NAME
                   SELECT m.* REPLACE (provenance::JSON AS provenance, coalesce(m.chosen_text::VARCHAR, ch.text) AS chosen_text),
                          rj.text AS rejected_text, rj.prompt AS prompt
                   FROM mined_pairs m LEFT JOIN candidates ch ON ch.candidate_id = m.chosen_candidate_id
                   JOIN candidates rj ON rj.candidate_id = m.rejected_candidate_id"""
            )
        finally:
            cur.unregister("mined_pairs")
        summary["new"] = cur.execute("SELECT count(*) FROM pairs").fetchone()[0] - before
    return summary
