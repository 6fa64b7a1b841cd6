"""Finished evaluation runs written through the store, as eval jobs would leave them (tests and screenshots)."""

from __future__ import annotations

import json
from datetime import timedelta

from core.store import now
from core.store.models import register_model

ROW = "| Parafuso sextavado | 3 | 12,50 |\n"

# family -> stage -> degenerate items out of the test items (the rest end cleanly)
TABLE = {"llama": {"vanilla": 0, "sft": 5, "dpo": 1}, "qwen2": {"vanilla": 1, "sft": 4, "dpo": 0}}


def add_eval_runs(ws, table: dict = TABLE, split: str = "test") -> dict[tuple[str, str], str]:
    """One finished greedy eval run per (family, stage) over the split's items. Returns run ids."""
    cur = ws.cursor()
    items = [r[0] for r in cur.execute("SELECT item_id FROM items WHERE split = ? ORDER BY 1", [split]).fetchall()]
    loop_text = ' {"itens": [\n' + ROW * 40
    runs, t = {}, now()
    for family, stages in table.items():
        for stage, k in stages.items():
            model = f"{family}-{stage}"
            register_model(cur, name=model, path=f"/nonexistent/{model}", family=family, stage=stage)
            run = f"eval-{family}-{stage}-{cur.execute('SELECT count(*) FROM runs').fetchall()[0][0]}"
            t += timedelta(seconds=1)
            cur.execute("INSERT INTO runs (run_id, kind, model, dataset, split, status, created_at) VALUES (?, 'eval', ?, 'demo', ?, 'done', ?)",
                        [run, model, split, t])
            for i, item in enumerate(items):
                bad = i < k
                text = loop_text if bad else ' {"ok": true}'
                loops = [{"start": 13, "end": len(loop_text), "period": len(ROW), "repeats": 40.0}] if bad else []
                cur.execute(
                    """INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, prompt_id, text, n_tokens,
                         finish_reason, decoding, degenerate, has_loop, loops, quality, created_at)
                       VALUES (?, ?, 'demo', ?, 0, sha256('P\nJSON:'), ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [f"{run}:{item}:0", run, item, text, 480 if bad else 12, "length" if bad else "stop",
                     json.dumps({"greedy": True, "max_new_tokens": 480}), bad, bad, json.dumps(loops),
                     0.2 if bad else 0.6, t],
                )
            runs[(family, stage)] = run
    return runs
