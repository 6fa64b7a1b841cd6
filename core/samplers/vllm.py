"""The vLLM backend (GPU machines): offline `LLM.generate`, all of a shard's items in one call."""

from __future__ import annotations

import time

from core.samplers.base import chat_prompt, DecodingConfig, Generation, ItemSkipped, Request, SamplerError


class VLLMSampler:
    name = "vllm"

    def __init__(self, model_path: str, device: str = "auto"):
        try:
            from vllm import LLM
        except ImportError:
            raise SamplerError("the vllm backend needs `pip install -e '.[vllm]'` on a GPU machine") from None
        try:
            self.llm = LLM(model=model_path)
        except Exception as e:
            raise SamplerError(f"vLLM cannot load {model_path!r}: {e}") from None
        self.tokenizer = self.llm.get_tokenizer()

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        return chat_prompt(self.tokenizer, prompt, chat_template)

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        from vllm import SamplingParams

        extra = {}
        if decoding.early_stop:
            from vllm.sampling_params import RepetitionDetectionParams

            extra["repetition_detection"] = RepetitionDetectionParams(max_pattern_size=64, min_pattern_size=1, min_count=8)
        params = [
            SamplingParams(
                n=r.n, seed=r.seed, max_tokens=decoding.max_new_tokens,
                temperature=0.0 if r.greedy else decoding.temperature,
                top_p=1.0 if r.greedy else decoding.top_p,
                top_k=decoding.top_k if decoding.top_k > 0 and not r.greedy else -1, **extra,
            )
            for r in requests
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        latency = time.perf_counter() - t0
        reason = {"stop": "stop", "length": "length"}
        return [
            [Generation(c.text, len(c.token_ids), reason.get(c.finish_reason, "repetition"), latency) for c in o.outputs]
            for o in outs
        ]
