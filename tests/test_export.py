"""Export of approved pairs: every format loads back with `datasets`, and TRL's DPOTrainer trains a step on it."""

import json

import pytest

from core.review.decisions import decide
from core.steps.export import ExportConfig, export_pairs
from core.store import WorkspaceError
from tests.review_data import add_review_run


@pytest.fixture
def approved_ws(demo_ws):
    """8 pairs; 3 approved (2 with a degenerate rejected cut at the limit), 1 swapped, 1 rejected."""
    pairs = add_review_run(demo_ws, 4)
    for p in pairs[:2] + pairs[4:5]:
        decide(demo_ws, p, "approve", "ana", 0)
    decide(demo_ws, pairs[2], "swap", "ana", 0)
    decide(demo_ws, pairs[3], "reject", "ana", 0)
    return demo_ws, pairs


def test_every_format_loads_back_with_datasets(approved_ws, tmp_path):
    from datasets import load_dataset, load_from_disk

    ws, pairs = approved_ws
    loaded = {}
    for fmt, name in (("trl", "p.trl.jsonl"), ("jsonl", "p.jsonl"), ("parquet", "p.parquet"), ("hf", "p_hf")):
        s = export_pairs(ws, tmp_path / name, ExportConfig(format=fmt, run="rs"))
        assert s["pairs"] == 4 and s["rejected_cut_at_limit"] == 2
        if fmt == "hf":
            loaded[fmt] = load_from_disk(str(tmp_path / name))
        else:
            loaded[fmt] = load_dataset("json" if fmt in ("trl", "jsonl") else "parquet", data_files=str(tmp_path / name), split="train")
    assert loaded["trl"].column_names == ["prompt", "chosen", "rejected", "rejected_cut_at_limit"]
    for ds in loaded.values():
        assert len(ds) == 4 and sum(ds["rejected_cut_at_limit"]) == 2
    full = loaded["parquet"]
    assert {"pair_id", "reviewer", "rejected_finish_reason", "chosen_candidate_id"} <= set(full.column_names)
    row = full.to_list()[full["pair_id"].index(pairs[2])]  # the swapped pair: the loop is now chosen, the clean one rejected
    assert row["rejected"] == ' {"ok": "good"}' and row["chosen"].startswith(' {"itens"') and row["rejected_cut_at_limit"] is False
    assert all(r["prompt"].endswith("JSON:") for r in full.to_list())


def test_conversational_style_needs_a_chat_template(approved_ws, tmp_path):
    ws, _ = approved_ws
    export_pairs(ws, tmp_path / "c.jsonl", ExportConfig(format="trl", style="conversational"))  # model path missing: allowed
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").open()]
    assert rows[0]["prompt"][0]["role"] == "user" and rows[0]["prompt"][0]["content"].endswith("JSON:")
    assert rows[0]["chosen"][0]["role"] == "assistant" and not rows[0]["chosen"][0]["content"].startswith(" ")
    ws.cursor().execute("UPDATE models SET path = ?", [str(tmp_path)])
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(WorkspaceError, match="no chat template"):
        export_pairs(ws, tmp_path / "d.jsonl", ExportConfig(format="trl", style="conversational"))


def test_nothing_approved_is_a_clear_error(demo_ws, tmp_path):
    add_review_run(demo_ws, 1)
    with pytest.raises(WorkspaceError, match="no approved pairs"):
        export_pairs(demo_ws, tmp_path / "x.jsonl", ExportConfig())


def test_exported_pairs_train_one_dpo_step(approved_ws, tmp_path, tiny_model):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    ws, _ = approved_ws
    export_pairs(ws, tmp_path / "train.jsonl", ExportConfig(format="trl"))
    ds = load_dataset("json", data_files=str(tmp_path / "train.jsonl"), split="train")
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, gradient_checkpointing=False, max_steps=1,
                     per_device_train_batch_size=2, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    result = trainer.train()
    assert trainer.state.global_step == 1 and result.training_loss > 0
