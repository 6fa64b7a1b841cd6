"""Training (issue 8): the EOS rule at the token level, DPO and SFT jobs on a tiny model through the
job mechanism and the CLI, LoRA save/load, cancel with a checkpoint, failures, pathology warnings."""

import json
import time

import pytest

from core import jobs
from core.review.decisions import decide
from core.steps.train import DPORunConfig, _dpo_config, _dpo_trainer_class, pathology_warnings, train_dpo
from core.steps.train_job import TrainJobConfig, finish_training, next_stage, read_metrics, start_training, training_summary
from core.store import WorkspaceError
from core.store.models import register_model
from tests.review_data import ROW, add_review_run


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _changed(a, b) -> bool:
    return any((a[k] - b[k]).abs().max().item() > 0 for k in a if k in b)


@pytest.fixture
def train_ws(demo_ws, tiny_model):
    """3 items' pairs, 4 approved (2 with a loop cut at the limit); the base is the tiny model, llama · sft."""
    pairs = add_review_run(demo_ws, 3)
    register_model(demo_ws.cursor(), name="tiny-sft", path=str(tiny_model), family="llama", stage="sft")
    for p in pairs[:4]:
        decide(demo_ws, p, "approve", "ana", 0)
    return demo_ws


# ---------------------------------------------------------------- the EOS rule


def _prepared(tokenizer_path, tmp_path, rows, trainer_cls):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = DPORunConfig(max_steps=1, per_device_train_batch_size=2, precompute_ref_log_probs=False)
    args = _dpo_config(cfg, tmp_path, True, False)
    tr = trainer_cls(model=AutoModelForCausalLM.from_pretrained(str(tokenizer_path)), args=args,
                     train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(str(tokenizer_path)))
    return tr.train_dataset.to_list(), tr.processing_class.eos_token_id


def test_rejected_cut_at_the_limit_gets_no_eos_and_chosen_keep_theirs(tiny_model, tmp_path):
    from trl import DPOTrainer

    loop = ' {"itens": [\n' + ROW * 3
    rows = [
        {"prompt": "Documento a\nJSON:", "chosen": ' {"ok": 1}', "rejected": loop, "rejected_cut_at_limit": True},
        {"prompt": "Documento a\nJSON:", "chosen": ' {"ok": 1}', "rejected": loop, "rejected_cut_at_limit": False},
    ]
    ours, eos = _prepared(tiny_model, tmp_path / "a", rows, _dpo_trainer_class())
    plain, _ = _prepared(tiny_model, tmp_path / "b", rows, DPOTrainer)
    cut, stopped = ours
    assert cut["chosen_ids"][-1] == eos and stopped["chosen_ids"][-1] == eos  # chosen keep their EOS
    assert stopped["rejected_ids"][-1] == eos  # a rejected that stopped by itself keeps it too
    assert eos not in cut["rejected_ids"]  # the cut one never emitted it: none appended
    assert cut["rejected_ids"] == stopped["rejected_ids"][:-1]  # exactly one token less, the rest identical
    assert plain[0]["rejected_ids"][-1] == eos  # TRL alone would have appended it: the rule is what differs
    assert cut["prompt_ids"] == plain[0]["prompt_ids"] and cut["chosen_ids"] == plain[0]["chosen_ids"]


# ---------------------------------------------------------------- DPO and SFT as jobs


@pytest.mark.slow
def test_dpo_from_the_cli_trains_logs_and_registers_stage_dpo(train_ws, tiny_model, capsys):
    from core.cli import main

    code = main(["train", "dpo", "--workspace", str(train_ws.root), "--base", "tiny-sft", "--pairs", "rs",
                 "--max-steps", "3", "--batch-size", "2", "--lr", "1e-3", "--loss", "rpo", "--rpo-weight", "0.5", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, out
    run_id = out["run_id"]
    assert out["status"] == "done" and out["result"]["global_step"] == 3 and out["result"]["precomputed_ref"] is True
    model = out["model"]
    assert model["stage"] == "dpo" and model["family"] == "llama" and model["parent"] == "tiny-sft" and model["name"] == run_id
    assert model["path"] == str(train_ws.models_dir / run_id)
    assert _changed(_weights(tiny_model), _weights(train_ws.models_dir / run_id))
    metrics = read_metrics(train_ws, run_id)
    steps = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert all({"rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "learning_rate", "grad_norm"} <= set(m) for m in steps)
    stored = train_ws.cursor().execute(
        "SELECT count(DISTINCT step), count(*) FILTER (name = 'logps/chosen') FROM train_metrics WHERE run_id = ?", [run_id]
    ).fetchone()
    assert stored[0] >= 3 and stored[1] == 3  # the store has them too, through the job's shards
    spec = json.loads((train_ws.jobs_dir / run_id / "spec.json").read_text())
    assert spec["config"]["params"]["loss"] == "rpo" and spec["n_examples"] == 4
    cfg_row = json.loads(train_ws.cursor().execute("SELECT config FROM models WHERE name = ?", [run_id]).fetchone()[0])
    assert cfg_row["params"]["rpo_weight"] == 0.5 and cfg_row["pairs"] == "rs"
    assert finish_training(train_ws, run_id) == model  # idempotent
    assert train_ws.cursor().execute("SELECT count(*) FROM models WHERE name = ?", [run_id]).fetchone()[0] == 1


@pytest.mark.slow
def test_sft_on_chosen_texts_as_a_job_registers_stage_sft(train_ws, tiny_model):
    run_id = start_training(train_ws, TrainJobConfig(method="sft", base="tiny-sft", pairs="rs", name="tiny-sft2",
                                                     params={"max_steps": 2, "per_device_train_batch_size": 2, "logging_steps": 1}))
    state = jobs.wait(train_ws, run_id, poll_s=0.3)
    assert state.status == "done", jobs.read_log(train_ws, run_id)
    s = training_summary(train_ws, run_id)
    assert s["model"]["name"] == "tiny-sft2" and s["model"]["stage"] == "sft" and s["model"]["parent"] == "tiny-sft"
    assert s["steps_logged"] == 2 and s["last"]["loss"] > 0
    assert _changed(_weights(tiny_model), _weights(train_ws.models_dir / run_id))


@pytest.mark.slow
def test_cancel_leaves_the_last_checkpoint_and_resume_continues_from_it(train_ws):
    from transformers import AutoModelForCausalLM

    run_id = start_training(train_ws, TrainJobConfig(base="tiny-sft", pairs="rs", params={
        "max_steps": 60, "per_device_train_batch_size": 2, "save_steps": 1}))
    ckpt_root = train_ws.models_dir / run_id / "trainer"
    deadline = time.time() + 120
    # a complete checkpoint: trainer_state.json is written after the weights (a cancel between the two, seen
    # in a full run, left none complete, rightly)
    while not any(ckpt_root.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.2)
    assert jobs.cancel(train_ws, run_id)
    state = jobs.wait(train_ws, run_id, poll_s=0.3)
    assert state.status == "cancelled"
    result = json.loads((train_ws.jobs_dir / run_id / "result.json").read_text())
    assert result["saved"] is False and result["last_checkpoint"]
    at = int(result["last_checkpoint"].rsplit("-", 1)[1])
    assert at < 60
    AutoModelForCausalLM.from_pretrained(result["last_checkpoint"])  # usable
    assert finish_training(train_ws, run_id) is None  # nothing registered
    assert train_ws.cursor().execute("SELECT count(*) FROM models WHERE name = ?", [run_id]).fetchone()[0] == 0

    jobs.launch(train_ws, run_id)  # Resume on the page: continues from the checkpoint
    assert jobs.wait(train_ws, run_id, poll_s=0.3).status == "done"
    assert f"resuming from {result['last_checkpoint']}" in (train_ws.jobs_dir / run_id / "log.txt").read_text()
    steps = [m["step"] for m in read_metrics(train_ws, run_id) if "loss" in m]
    assert steps == list(range(1, 61))  # no step lost or logged twice across the cancel
    assert training_summary(train_ws, run_id)["model"]["stage"] == "dpo"


# ---------------------------------------------------------------- LoRA


@pytest.mark.slow
def test_lora_adapters_save_and_load_and_merge(tiny_model, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    pairs = [{"prompt": f"Documento {i}\nJSON:", "chosen": ' {"ok": 1}', "rejected": ' {"itens": [\n' + ROW * 3,
              "rejected_cut_at_limit": True} for i in range(4)]
    base = _weights(tiny_model)
    cfg = dict(max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, use_lora=True, lora_r=4,
               lora_target_modules="q_proj,v_proj")
    res = train_dpo(DPORunConfig(merge_lora=False, **cfg), pairs, tmp_path / "adapters", model=str(tiny_model))
    assert res.global_step == 2 and res.precomputed_ref is True
    assert (tmp_path / "adapters" / "adapter_config.json").exists() and not (tmp_path / "adapters" / "model.safetensors").exists()
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapters"))
    assert any("lora_B" in n and p.abs().max().item() > 0 for n, p in peft_model.named_parameters())  # trained, not zero-init
    train_dpo(DPORunConfig(merge_lora=True, **cfg), pairs, tmp_path / "merged", model=str(tiny_model))
    merged = _weights(tmp_path / "merged")
    assert not any("lora" in k for k in merged)
    assert _changed(base, merged)
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))


# ---------------------------------------------------------------- failures


def test_bad_values_fail_before_any_job(train_ws):
    bad = [({"loss": "nope"}, "unknown DPO loss"), ({"beta": 0}, "beta"), ({"learning_rate": -1}, "learning_rate"),
           ({"max_steps": 0}, "max_steps"), ({"label_smoothing": 0.7}, "label_smoothing"), ({"lr": 1}, "unknown dpo setting")]
    for params, match in bad:
        with pytest.raises(WorkspaceError, match=match):
            start_training(train_ws, TrainJobConfig(base="tiny-sft", pairs="rs", params=params))
    with pytest.raises(WorkspaceError, match="does not exist"):
        start_training(train_ws, TrainJobConfig(base="/nowhere/model", pairs="rs"))
    with pytest.raises(WorkspaceError, match="neither a run"):
        start_training(train_ws, TrainJobConfig(base="tiny-sft", pairs="no-such-run"))
    with pytest.raises(WorkspaceError, match="already registered"):
        start_training(train_ws, TrainJobConfig(base="tiny-sft", pairs="rs", name="tiny-sft"))
    assert not jobs.list_runs(train_ws, "train")


def test_no_approved_pairs_is_a_clear_error(demo_ws, tiny_model):
    add_review_run(demo_ws, 1)
    with pytest.raises(WorkspaceError, match="no approved pairs"):
        start_training(demo_ws, TrainJobConfig(base=str(tiny_model), pairs="rs"))


@pytest.mark.slow
def test_a_crash_in_the_worker_ends_the_job_failed_with_the_reason(train_ws, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')  # a model folder without weights or tokenizer
    run_id = start_training(train_ws, TrainJobConfig(base=str(broken), pairs="rs", params={"max_steps": 1}))
    state = jobs.wait(train_ws, run_id, poll_s=0.3)
    assert state.status == "failed" and state.error
    status, error = train_ws.cursor().execute("SELECT status, error FROM runs WHERE run_id = ?", [run_id]).fetchone()
    assert status == "failed" and "Error" in error
    assert finish_training(train_ws, run_id) is None


def test_exports_are_a_pairs_source(train_ws, tmp_path):
    from core.steps.export import ExportConfig, export_pairs
    from core.steps.train_job import read_pairs_source

    export_pairs(train_ws, tmp_path / "p.jsonl", ExportConfig(format="trl", run="rs"))
    export_pairs(train_ws, tmp_path / "p.parquet", ExportConfig(format="parquet", run="rs"))
    a, b, c = (read_pairs_source(train_ws, s) for s in ("rs", str(tmp_path / "p.jsonl"), str(tmp_path / "p.parquet")))
    assert a == b == c and len(a) == 4 and sum(r["rejected_cut_at_limit"] for r in a) == 2
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(WorkspaceError, match="no prompt/chosen/rejected"):
        read_pairs_source(train_ws, str(tmp_path / "bad.jsonl"))


# ---------------------------------------------------------------- pure helpers


def _rows(chosen, rejected=None):
    rejected = rejected or [c - 5 for c in chosen]
    return [{"step": i + 1, "loss": 0.5, "logps/chosen": c, "logps/rejected": r} for i, (c, r) in enumerate(zip(chosen, rejected))]


def test_falling_chosen_logps_warn_and_suggest_rpo():
    (w,) = pathology_warnings(_rows([-7.6, -9.0, -12.5, -15.0, -19.8, -26.6], [-20, -30, -40, -50, -60, -70]))
    assert "Chosen log-probs are falling" in w and "RPO" in w and "learning rate" in w and "rejected" in w


@pytest.mark.parametrize("chosen", [
    [-7.6, -7.4, -7.5, -7.3, -7.2, -7.0],  # rising: fine
    [-7.6, -7.7, -7.6, -7.8, -7.7, -7.8],  # flat within noise
    [-7.6, -30.0, -8.0],  # too few points to call a trend
    [-7.0, -12.0, -6.0, -13.0, -7.0, -12.5, -6.5, -12.0, -7.0],  # jumping about, not steadily down
])
def test_no_warning_without_a_steady_fall(chosen):
    assert pathology_warnings(_rows(chosen)) == []


def test_next_stage_counts_dpo_rounds():
    assert [next_stage("dpo", s) for s in ("sft", "vanilla", None, "dpo", "dpo2")] == ["dpo", "dpo", "dpo", "dpo2", "dpo3"]
    assert next_stage("sft", "dpo") == "sft"
