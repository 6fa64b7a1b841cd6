"""Export approved pairs for training: TRL's preference format, JSONL, Parquet, a `datasets` folder.

Each row carries ``rejected_cut_at_limit``: the rejected candidate stopped at the token limit (or
was stopped by loop-aware stopping) and never emitted EOS, so a trainer must not append one to it
(DESIGN.md). The standard format keeps the exact prompt string each candidate was sampled from;
the conversational format gives TRL messages instead, for models with a chat template, so TRL
applies the same template itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.config import option
from core.prompts import DEFAULT_INSTRUCTION, build_prompt
from core.store import WorkspaceError

FORMATS = ("trl", "jsonl", "parquet", "hf")
CUT_REASONS = ("length", "repetition")
TRL_COLUMNS = ("prompt", "chosen", "rejected", "rejected_cut_at_limit")


@dataclass
class ExportConfig:
    """What to export and how."""

    format: str = option("trl", "trl (prompt/chosen/rejected JSONL), jsonl or parquet (every column), hf (a datasets folder)")
    run: str | None = option(None, "only the approved pairs of this sampling run (None: all runs)")
    style: str = option("standard", "standard (the exact sampled prompt string) or conversational (messages; needs a chat template)")
    hub_repo: str | None = option(None, "hf format: also push_to_hub to this repo when a Hugging Face token is set")


def approved_rows(ws, run: str | None = None) -> list[dict]:
    """The approved pairs with what training needs, in pair order."""
    cur = ws.cursor()
    rows = cur.execute(
        """SELECT p.pair_id, p.run_id, p.dataset, p.item_id, p.prompt, p.chosen_text, p.rejected_text,
                  p.chosen_candidate_id, p.rejected_candidate_id, c.finish_reason, p.updated_by, r.model,
                  i.text, json_extract_string(r.config, '$.instruction')
           FROM pairs p LEFT JOIN candidates c ON c.candidate_id = p.rejected_candidate_id
           LEFT JOIN runs r ON r.run_id = p.run_id LEFT JOIN items i ON i.dataset = p.dataset AND i.item_id = p.item_id
           WHERE p.status = 'approved' AND (? IS NULL OR p.run_id = ?) ORDER BY p.pair_id""",
        [run, run],
    ).fetchall()
    keys = ("pair_id", "run_id", "dataset", "item_id", "prompt", "chosen", "rejected", "chosen_candidate_id",
            "rejected_candidate_id", "rejected_finish_reason", "reviewer", "model", "_document", "_instruction")
    out = []
    for r in rows:
        d = dict(zip(keys, r))
        d["rejected_cut_at_limit"] = d["rejected_finish_reason"] in CUT_REASONS
        out.append(d)
    return out


def has_chat_template(model_path: str | None) -> bool | None:
    """Whether a local model folder's tokenizer has a chat template; None when it cannot be told (hub id)."""
    if not model_path or not Path(model_path).is_dir():
        return None
    p = Path(model_path)
    if (p / "chat_template.jinja").exists() or (p / "chat_template.json").exists():
        return True
    try:
        return bool(json.loads((p / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def _conversational(row: dict) -> dict:
    user = build_prompt(row["_document"] or "", row["_instruction"] or DEFAULT_INSTRUCTION)
    return {
        "prompt": [{"role": "user", "content": user}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
    }


def export_pairs(ws, out: str | os.PathLike, cfg: ExportConfig) -> dict:
    """Write the approved pairs to `out` in the chosen format; returns a summary."""
    if cfg.format not in FORMATS:
        raise WorkspaceError(f"unknown export format {cfg.format!r}: use one of {', '.join(FORMATS)}")
    if cfg.style not in ("standard", "conversational"):
        raise WorkspaceError("style is standard or conversational")
    rows = approved_rows(ws, cfg.run)
    if not rows:
        raise WorkspaceError("no approved pairs to export" + (f" in run {cfg.run}" if cfg.run else "") + ": approve some on the Review page")
    if cfg.style == "conversational":
        cur = ws.cursor()
        for model in {r["model"] for r in rows}:
            path = (cur.execute("SELECT path FROM models WHERE name = ?", [model]).fetchone() or [model])[0]
            if has_chat_template(path) is False:
                raise WorkspaceError(f"model {model!r} has no chat template: export in the standard style")
        for r in rows:
            r.update(_conversational(r))
    columns = TRL_COLUMNS if cfg.format == "trl" else tuple(k for k in rows[0] if not k.startswith("_"))
    records = [{k: r[k] for k in columns} for r in rows]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pushed = None
    if cfg.format in ("trl", "jsonl"):
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        tmp.replace(out)
    else:
        from datasets import Dataset

        ds = Dataset.from_list(records)
        if cfg.format == "parquet":
            ds.to_parquet(str(out))
        else:
            ds.save_to_disk(str(out))
            if cfg.hub_repo:
                from huggingface_hub import get_token

                if not get_token():
                    raise WorkspaceError("no Hugging Face token (HF_TOKEN or `hf auth login`): saved to disk, not pushed")
                ds.push_to_hub(cfg.hub_repo, private=True)
                pushed = cfg.hub_repo
    return {
        "out": str(out.resolve()), "format": cfg.format, "style": cfg.style, "run": cfg.run, "pairs": len(records),
        "rejected_cut_at_limit": sum(r["rejected_cut_at_limit"] for r in rows), "pushed_to": pushed,
    }
