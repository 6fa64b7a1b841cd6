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


def build_tiny_vlm(out: Path, max_positions: int = 1024, seed: int = 0) -> Path:
    """A randomly initialised tiny Gemma3-shaped VLM with its processor (the demo's recipe, smaller)."""
    if (out / "config.json").exists():
        return out
    from core.demo.vlm import make_processor, vlm_tokenizer

    records = build_demo_records(seed=seed, n_train=40, n_validation=0, n_test=0)
    tok = vlm_tokenizer(train_demo_tokenizer([r["text"] + r["reference"] for r in records], vocab_size=300))
    spec = dataclasses.replace(FAMILIES["gemma3"], hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                               image_size=64, image_tokens=16, vision_hidden_size=16, vision_layers=1)
    processor = make_processor(tok, spec.image_size, spec.image_tokens)
    model = make_model(spec, tok, max_positions, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
