"""Sampler backends behind one interface (:class:`core.samplers.base.Sampler`), chosen by name.

* ``transformers`` — ``model.generate`` on CPU or GPU, through the one model loader (core.loader);
* ``vllm`` — offline ``LLM.generate`` on GPU machines (imported only when chosen);
* ``openai`` — any OpenAI-compatible ``/v1/completions`` server (``vllm serve`` fleets, hosted APIs).

Determinism (a killed job resumes to exactly the candidates of an uninterrupted run) is the
sampling step's business: every item gets its own seed, and a resumed job re-forms the same batches.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.samplers.base import Sampler, SamplerError


def _transformers(cfg, model_path: str) -> Sampler:
    from core.samplers.transformers import TransformersSampler

    return TransformersSampler(model_path, cfg.device)


def _vllm(cfg, model_path: str) -> Sampler:
    from core.samplers.vllm import VLLMSampler

    return VLLMSampler(model_path, cfg.device)


def _openai(cfg, model_path: str) -> Sampler:
    from core.samplers.openai import OpenAISampler

    return OpenAISampler(cfg.server_model or cfg.model, cfg.base_url, cfg.api_key_env, cfg.concurrency, cfg.timeout_s, cfg.retries)


# backend name -> constructor from a sampling config (any object with the SampleConfig fields it reads)
SAMPLERS = {"transformers": _transformers, "vllm": _vllm, "openai": _openai}
BACKENDS = tuple(SAMPLERS)
LOCAL_BACKENDS = ("transformers", "vllm")  # backends that load the model on this machine


def make_sampler(cfg, model_path: str) -> Sampler:
    """The backend `cfg.backend` names, ready to generate."""
    if cfg.backend not in SAMPLERS:
        raise SamplerError(f"unknown backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
    if cfg.backend in LOCAL_BACKENDS and not Path(model_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SamplerError(f"model {model_path!r} is not a local path and the hub is offline")
    return SAMPLERS[cfg.backend](cfg, model_path)
