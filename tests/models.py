"""Tiny random models for tests that need a real model but not a trained one (seconds to build)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from core.demo.docs import build_demo_records
from core.demo.models import FAMILIES, make_model, train_demo_tokenizer


def build_tiny_model(out: Path, family: str = "llama", max_positions: int = 2048, seed: int = 0) -> Path:
    """A randomly initialised ~100k-parameter model with the demo tokenizer, saved like a real one."""
    if (out / "config.json").exists():
        return out
    records = build_demo_records(seed=seed, n_train=40, n_validation=0, n_test=0)
    tok = train_demo_tokenizer([r["text"] + r["reference"] for r in records], vocab_size=300)
    spec = dataclasses.replace(FAMILIES[family], hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64)
    model = make_model(spec, tok, max_positions, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
