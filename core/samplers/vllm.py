"""The vLLM backend (GPU machines): offline `LLM.generate`, all of a shard's items in one call.

A model with a vision part is started with one image per prompt (``limit_mm_per_prompt``) and the
pixel bounds given (``mm_processor_kwargs``); each request then goes in as
``{"prompt": …, "multi_modal_data": {"image": page}}``, its prompt formatted by the model's own
processor (chat template with an image part). Written against vLLM 0.33's API; tested on GPU
machines only (the ``[vllm]`` extra)."""

from __future__ import annotations

import time

from core.samplers.base import chat_prompt, DecodingConfig, Generation, image_prompt, ItemSkipped, Request, SamplerError


class VLLMSampler:
    name = "vllm"

    def __init__(self, model_path: str, device: str = "auto", *, tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None):
        try:
            from vllm import LLM
        except ImportError:
            raise SamplerError("the vllm backend needs `pip install -e '.[vllm]'` on a GPU machine") from None
        from core.loader import LoadError, is_vision, load_config

        try:
            self.vision = is_vision(load_config(model_path))
        except LoadError as e:
            raise SamplerError(str(e)) from None
        engine: dict = {"tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization}
        if data_parallel_size > 1:
            engine["data_parallel_size"] = data_parallel_size
        if max_model_len:
            engine["max_model_len"] = max_model_len
        self.processor = None
        if self.vision:
            engine["limit_mm_per_prompt"] = {"image": 1}
            pixels = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
            if pixels:
                engine["mm_processor_kwargs"] = pixels
            from transformers import AutoProcessor

            try:
                self.processor = AutoProcessor.from_pretrained(model_path)
            except Exception as e:
                raise SamplerError(f"cannot load the processor of {model_path!r}: {e}") from None
        try:
            self.llm = LLM(model=model_path, **engine)
        except Exception as e:
            raise SamplerError(f"vLLM cannot load {model_path!r}: {e}") from None
        self.tokenizer = self.llm.get_tokenizer()

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        return chat_prompt(self.tokenizer, prompt, chat_template)

    def format_image_prompt(self, instruction: str, chat_template: str) -> str:
        return image_prompt(self.processor, instruction, chat_template)

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        from vllm import SamplingParams

        extra = {}
        if decoding.early_stop:
            from vllm.sampling_params import RepetitionDetectionParams

            extra["repetition_detection"] = RepetitionDetectionParams(max_pattern_size=64, min_pattern_size=1, min_count=8)
        out: list = [None] * len(requests)
        todo = []
        for i, r in enumerate(requests):
            if self.vision and r.image is None:
                out[i] = ItemSkipped("this model reads page images and the item has none")
            else:
                todo.append(i)
        params = [
            SamplingParams(
                n=requests[i].n, seed=requests[i].seed, max_tokens=decoding.max_new_tokens,
                temperature=0.0 if requests[i].greedy else decoding.temperature,
                top_p=1.0 if requests[i].greedy else decoding.top_p,
                top_k=decoding.top_k if decoding.top_k > 0 and not requests[i].greedy else -1, **extra,
            )
            for i in todo
        ]
        prompts = [{"prompt": requests[i].prompt, "multi_modal_data": {"image": requests[i].image}} if self.vision
                   else requests[i].prompt for i in todo]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False) if todo else []
        latency = time.perf_counter() - t0
        reason = {"stop": "stop", "length": "length", "repetition": "repetition"}
        for i, o in zip(todo, outs):
            out[i] = [Generation(c.text, len(c.token_ids), reason.get(c.finish_reason, "stop"), latency) for c in o.outputs]
        return out
