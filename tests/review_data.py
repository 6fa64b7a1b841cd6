"""Pending pairs built through the store, as sampling, judging and mining would leave them (tests and bench)."""

from __future__ import annotations

import json

from core.policy.mining import PairPolicy
from core.steps.pairs import mine_run
from core.store import now
from core.store.models import register_model

ROW = "| Parafuso sextavado | 3 | 12,50 |\n"


def add_review_run(ws, n_items: int, run: str = "rs", judge_run: str = "rj", model: str = "tiny-sft", split: str = "train") -> list[str]:
    """For n items: a clean good (0.9), a degenerate loop (0.3) and a clean middling (0.7) candidate; mined to 2 pairs each.

    Returns the pair ids, sorted.
    """
    cur = ws.cursor()
    register_model(cur, name=model, path="/nonexistent/tiny", family="llama", stage="sft")
    items = [r[0] for r in cur.execute("SELECT item_id FROM items WHERE split = ? ORDER BY 1 LIMIT ?", [split, n_items]).fetchall()]
    assert len(items) == n_items, f"only {len(items)} {split} items"
    cur.execute("INSERT INTO runs (run_id, kind, model, dataset, split, status, created_at) VALUES (?, 'sample', ?, 'demo', ?, 'done', ?)",
                [run, model, split, now()])
    cur.execute("INSERT INTO runs (run_id, kind, status, config, source_run, created_at) VALUES (?, 'judge', 'done', ?, ?, ?)",
                [judge_run, json.dumps({"source_run": run}), run, now()])
    loop_text = ' {"itens": [\n' + ROW * 40
    kinds = [
        (' {"ok": "good"}', "stop", False, [], {"fidelity": 0.9, "completeness": 0.9, "format": 1.0, "no_repetition": 1.0}, 0.9),
        (loop_text, "length", True, [{"start": 13, "end": len(loop_text), "period": len(ROW), "repeats": 40.0}],
         {"fidelity": 0.5, "completeness": 0.2, "format": 0.0, "no_repetition": 0.0}, 0.3),
        (' {"ok": "middling"}', "stop", False, [], {"fidelity": 0.7, "completeness": 0.8, "format": 1.0, "no_repetition": 1.0}, 0.7),
    ]
    for item in items:
        for k, (text, finish, degenerate, loops, scores, overall) in enumerate(kinds):
            cid = f"{run}:{item}:{k}"
            cur.execute("INSERT INTO prompts VALUES (sha256(?), ?) ON CONFLICT DO NOTHING", [f"Documento {item}\nJSON:"] * 2)
            cur.execute(
                """INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, prompt_id, text, n_tokens,
                     finish_reason, degenerate, has_loop, loops, created_at) VALUES (?, ?, 'demo', ?, ?, sha256(?), ?, ?, ?, ?, ?, ?, ?)""",
                [cid, run, item, k, f"Documento {item}\nJSON:", text, len(text) // 3, finish, degenerate, degenerate, json.dumps(loops), now()],
            )
            cur.execute(
                "INSERT INTO judgments VALUES (?, ?, ?, 'reference', ?, ?, ?, NULL, ?)",
                [f"{judge_run}:{cid}", judge_run, cid, json.dumps(scores), overall, f"rationale for candidate {k}", now()],
            )
    mine_run(ws, judge_run, PairPolicy(min_chosen=0.6, min_margin=0.1, max_pairs_per_item=2))
    return [r[0] for r in cur.execute("SELECT pair_id FROM pairs WHERE run_id = ? ORDER BY 1", [run]).fetchall()]
