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


@pytest.mark.slow
def test_export_gives_training_the_prompt_the_model_was_sampled_with(demo_ws, tiny_model, tmp_path):
    """A custom instruction survives into both export styles (it once became the default in conversational ones)."""
    import shutil

    from transformers import AutoTokenizer

    from core import jobs
    from core.policy.prompts import build_prompt
    from core.samplers.base import DecodingConfig
    from core.steps.sample import SampleConfig, start_sampling
    from core.store import pairs as store_pairs
    from core.store.candidates import get_candidate
    from core.store.items import get_item

    model = tmp_path / "chat-model"
    shutil.copytree(tiny_model, model)
    (model / "chat_template.jinja").write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>")
    cfg = SampleConfig(model=str(model), dataset="demo", split="train", limit=1, instruction="Leia o documento e responda.",
                       decoding=DecodingConfig(n=1, max_new_tokens=6))
    run = start_sampling(demo_ws, cfg)
    assert jobs.wait(demo_ws, run).status == "done"
    greedy, sampled = (get_candidate(demo_ws, f"{run}:{i}") for i in
                       (demo_ws.cursor().execute("SELECT item_id || ':' || sample_index FROM candidates WHERE run_id = ? "
                                                 "ORDER BY sample_index", [run]).fetchall()[k][0] for k in (0, 1)))
    item = get_item(demo_ws.cursor(), "demo", greedy["item_id"])
    user = build_prompt(item["text"], cfg.instruction)
    tok = AutoTokenizer.from_pretrained(model)
    assert greedy["prompt"] == tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    store_pairs.insert_mined(demo_ws, [{
        "pair_id": "p-instr", "run_id": run, "dataset": "demo", "item_id": greedy["item_id"],
        "chosen_candidate_id": greedy["candidate_id"], "rejected_candidate_id": sampled["candidate_id"], "chosen_text": None,
        "status": "pending", "provenance": "{}", "version": 0, "updated_by": "test", "updated_at": greedy["created_at"]}])
    decide(demo_ws, "p-instr", "approve", "ana", 0)
    export_pairs(demo_ws, tmp_path / "std.jsonl", ExportConfig(run=run))
    export_pairs(demo_ws, tmp_path / "conv.jsonl", ExportConfig(run=run, style="conversational"))
    (std,) = [json.loads(line) for line in (tmp_path / "std.jsonl").read_text().splitlines()]
    (conv,) = [json.loads(line) for line in (tmp_path / "conv.jsonl").read_text().splitlines()]
    assert std["prompt"] == greedy["prompt"]
    assert conv["prompt"] == [{"role": "user", "content": user}] and "Leia o documento e responda." in user
