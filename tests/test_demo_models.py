"""Demo model families end to end with a tiny config: build, reload, generate, register."""
from __future__ import annotations

import json

import pytest

from core.config import helps as config_help
from core.demo.models import DemoBuildConfig, build_demo_models, register_demo_models, train_demo_tokenizer
from core.policy.metrics import bleu4, levenshtein_ratio, quality
from core.steps.train import SFTRunConfig, device_kwargs

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64, "sft_steps": 3}


def _tiny_config(families=("llama",)) -> DemoBuildConfig:
    return DemoBuildConfig(
        seed=1, families=list(families), vocab_size=320, n_train=12, n_validation=3, max_items=3,
        max_positions=512, n_vanilla_texts=24, vanilla_steps=2, vanilla_max_length=64, batch_size=4,
        eval_batch_size=3, max_new_tokens=24, spec_overrides={f: dict(TINY) for f in families},
    )


def test_quality_metric():
    ref = '{"nome":"Ana Souza","cpf":"123.456.789-09"}'
    assert quality(ref, ref) == pytest.approx(1.0)
    assert 0.0 <= quality('{"nome":"Ana"}', ref) < 1.0
    assert levenshtein_ratio("", "") == 1.0 and bleu4("", ref) == 0.0


def test_tokenizer_digits_and_special_tokens():
    tok = train_demo_tokenizer(["Parafuso sextavado 12,50 nome:Ana 2024"] * 50 + ['{"a":"123"}'] * 50, vocab_size=300)
    pieces = tok.convert_ids_to_tokens(tok("1234567890", add_special_tokens=False)["input_ids"])
    assert pieces == list("1234567890")
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.pad_token_id != tok.eos_token_id


def test_sft_config_cpu_safe_and_documented():
    kw = device_kwargs(SFTRunConfig(device="cpu"))
    assert kw["use_cpu"] is True and kw["bf16"] is False and kw["gradient_checkpointing"] is False
    helps = config_help(SFTRunConfig)
    assert all(helps.values()) and "learning_rate" in helps


@pytest.mark.slow
def test_build_reload_generate_register(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.store import open_workspace
    from core.store.models import list_models

    out = tmp_path / "models"
    manifest = build_demo_models(out, _tiny_config(("llama", "gpt2")), quiet=True)
    assert set(manifest["families"]) == {"llama", "gpt2"}
    assert json.loads((out / "manifest.json").read_text())["families"]["llama"]["sft"]["steps"] == 3
    for family, arch in (("llama", "llama"), ("gpt2", "gpt2")):
        entry = manifest["families"][family]
        ev = entry["validation"]
        assert ev["n"] == 3 and 0.0 <= ev["quality"] <= 1.0 and 0.0 <= ev["degeneration_rate"] <= 1.0
        for stage in ("vanilla", "sft"):
            d = out / family / stage
            for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
                assert (d / name).exists(), (d, name)
            tok = AutoTokenizer.from_pretrained(d)
            model = AutoModelForCausalLM.from_pretrained(d)
            assert model.config.model_type == arch
            assert tok.pad_token_id is not None and tok.eos_token_id is not None and tok.bos_token_id is not None
            enc = tok(["nome:Ana\nJSON:"], return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
            assert gen.shape[1] > enc["input_ids"].shape[1]
        rows = [json.loads(x) for x in (out / family / "runs" / "sft" / "metrics.jsonl").read_text().splitlines()]
        assert rows and "train_loss" in rows[-1] and rows[-1]["step"] == 3
        assert (out / family / "runs" / "sft" / "validation_outputs.jsonl").exists()

    ws = open_workspace(tmp_path / "ws")
    names = register_demo_models(ws, out, build_missing=False)
    assert sorted(names) == sorted(["demo-llama-vanilla", "demo-llama-sft", "demo-gpt2-vanilla", "demo-gpt2-sft"])
    models = {m["name"]: m for m in list_models(ws.cursor())}
    assert models["demo-llama-sft"]["stage"] == "sft" and models["demo-llama-sft"]["family"] == "llama"
    assert models["demo-llama-sft"]["parent"] == "demo-llama-vanilla"
    assert models["demo-gpt2-vanilla"]["stage"] == "vanilla" and models["demo-gpt2-vanilla"]["parent"] is None
    assert models["demo-gpt2-sft"]["path"] == str((out / "gpt2" / "sft").resolve())
    # idempotent
    assert sorted(register_demo_models(ws, out, build_missing=False)) == sorted(names)
    assert len(list_models(ws.cursor())) == 4
