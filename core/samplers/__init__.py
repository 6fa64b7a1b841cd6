"""Sampler backends behind one interface (:class:`core.samplers.base.Sampler`), chosen by name.

* ``transformers`` — ``model.generate`` on CPU or GPU, through the one model loader (core.loader);
* ``vllm`` — offline ``LLM.generate`` on GPU machines (imported only when chosen);
* ``openai`` — any OpenAI-compatible server, ``/v1/completions`` or ``/v1/chat/completions`` (pages as
  data-URL image parts; ``vllm serve`` fleets, hosted APIs).

Each backend says whether it feeds the page image (``sampler.vision``): the local ones when the
model's config has a vision part, the openai one unless ``images`` is off.

Determinism (a killed job resumes to exactly the candidates of an uninterrupted run) is the
sampling step's business: every item gets its own seed, and a resumed job re-forms the same batches.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.samplers.base import Sampler, SamplerError


def _transformers(o: dict, model_path: str) -> Sampler:
    from core.samplers.transformers import TransformersSampler

    return TransformersSampler(model_path, o["device"])


def _vllm(o: dict, model_path: str) -> Sampler:
    from core.samplers.vllm import VLLMSampler

    return VLLMSampler(model_path, o["device"], tensor_parallel_size=o["tensor_parallel_size"],
                       data_parallel_size=o["data_parallel_size"], gpu_memory_utilization=o["gpu_memory_utilization"],
                       max_model_len=o["max_model_len"], min_pixels=o["min_pixels"], max_pixels=o["max_pixels"])


def _openai(o: dict, model_path: str) -> Sampler:
    from core.samplers.openai import OpenAISampler

    return OpenAISampler(o["server_model"] or o["model"] or model_path, o["base_url"], o["api_key_env"], o["concurrency"],
                         o["timeout_s"], o["retries"], o["endpoint"], o["images"])


# backend name -> constructor from the options below and the model's path
SAMPLERS = {"transformers": _transformers, "vllm": _vllm, "openai": _openai}
BACKENDS = tuple(SAMPLERS)
LOCAL_BACKENDS = ("transformers", "vllm")  # backends that load the model on this machine
# What a backend may be given, with defaults (a sampling run's config has a field of each name).
OPTIONS = {"model": "", "device": "auto", "base_url": None, "api_key_env": "OPENAI_API_KEY", "server_model": None,
           "concurrency": 8, "timeout_s": 120.0, "retries": 3, "endpoint": "auto", "images": "auto",
           "tensor_parallel_size": 1, "data_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": None,
           "min_pixels": None, "max_pixels": None}


def make_sampler(backend: str, model_path: str, **options) -> Sampler:
    """The backend `backend` names, ready to generate; `options` are OPTIONS' names (the others default)."""
    if backend not in SAMPLERS:
        raise SamplerError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend in LOCAL_BACKENDS and not Path(model_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SamplerError(f"model {model_path!r} is not a local path and the hub is offline")
    return SAMPLERS[backend]({**OPTIONS, **options}, model_path)


def sampler_for(cfg, model_path: str) -> Sampler:
    """The backend of a sampling run's config (any object with OPTIONS' fields and `backend`)."""
    return make_sampler(cfg.backend, model_path, **{k: getattr(cfg, k) for k in OPTIONS if hasattr(cfg, k)})
