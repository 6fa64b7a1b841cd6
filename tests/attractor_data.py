"""Real degenerate outputs of the shipped demo models, with the exact prompts they were decoded from."""

from __future__ import annotations

import json
from pathlib import Path

from core.demo.docs import make_record
from core.demo.models import DEMO_MAX_ITEMS, DemoBuildConfig
from core.policy.detect import analyze
from core.policy.prompts import build_prompt

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "data" / "models"


def demo_loop(family: str = "llama", record_id: str = "demo-validation-00031") -> dict:
    """A greedy validation output of the family's SFT model that degenerated (from its build's
    ``validation_outputs.jsonl``), its prompt rebuilt from the same seeded document, and its loops."""
    out = next(json.loads(line) for line in (MODELS / family / "runs" / "sft" / "validation_outputs.jsonl").open()
               if json.loads(line)["id"] == record_id)
    cfg = DemoBuildConfig()
    index = int(record_id.rsplit("-", 1)[1])
    record = make_record(cfg.seed, "validation", index, noise=cfg.noise, max_items=DEMO_MAX_ITEMS)
    assert record["id"] == record_id
    det = analyze(out["text"], out["finish_reason"])
    return {"model_path": str(MODELS / family / "sft"), "record": record, "prompt": build_prompt(record["text"]),
            "text": out["text"], "finish_reason": out["finish_reason"], "n_tokens": out["n_tokens"],
            "degenerate": det.degenerate, "loops": [lp.to_dict() for lp in det.loops]}


def add_loop_candidate(ws, loop: dict, model_name: str = "demo-llama-sft", run_id: str = "s-attr") -> str:
    """A sampling run of the registered demo model holding that degenerate output as its candidate."""
    from core.store import now
    from core.store.models import register_model

    cur = ws.cursor()
    register_model(cur, name=model_name, path=loop["model_path"], family="llama", stage="sft")
    cur.execute("INSERT INTO items (dataset, item_id, split, text, reference, imported_at) VALUES ('demo', ?, 'validation', ?, ?, ?) "
                "ON CONFLICT DO NOTHING", [loop["record"]["id"], loop["record"]["text"], loop["record"]["reference"], now()])
    cur.execute("INSERT INTO runs (run_id, kind, model, dataset, config, status, created_at, backend, model_path) "
                "VALUES (?, 'sample', ?, 'demo', ?, 'done', ?, 'transformers', ?)",
                [run_id, model_name, json.dumps({"config": {"backend": "transformers"}, "model_path": loop["model_path"]}), now(),
                 loop["model_path"]])
    cid = f"{run_id}:{loop['record']['id']}:0"
    cur.execute("INSERT INTO prompts VALUES (sha256(?), ?) ON CONFLICT DO NOTHING", [loop["prompt"], loop["prompt"]])
    cur.execute(
        "INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, prompt_id, text, n_tokens, finish_reason, "
        "backend, degenerate, has_loop, loops, metrics) VALUES (?, ?, 'demo', ?, 0, sha256(?), ?, ?, ?, 'transformers', ?, ?, ?, '{}')",
        [cid, run_id, loop["record"]["id"], loop["prompt"], loop["text"], loop["n_tokens"], loop["finish_reason"],
         loop["degenerate"], bool(loop["loops"]), json.dumps(loop["loops"], ensure_ascii=False)],
    )
    return cid
