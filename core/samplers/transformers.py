"""The transformers backend: `model.generate` on CPU or GPU, a shard's items decoded together.

A vision-language model (``core.loader`` tells it by its config) is fed through its processor:
each request's page image and prompt become ``input_ids`` with the image expanded into its tokens,
plus every image input the architecture takes (``pixel_values``, ``token_type_ids``,
``image_grid_thw``…), batched with left padding. Prompt lengths are counted after that expansion."""

from __future__ import annotations

import time

from core.policy.detect import DetectConfig, tail_loop
from core.samplers.base import chat_prompt, DecodingConfig, Generation, image_prompt, ItemSkipped, Request, SamplerError


class _LoopStop:
    """A StoppingCriteria: every `every` tokens, rows whose tail is a confirmed loop stop here.

    Cheap per call: a row that emitted EOS is remembered from the one new token of each step, and
    only the last `tail_tokens` tokens of a row are decoded for the check (``tail_loop`` looks at
    a bounded window anyway), so a check costs O(window), not O(length).
    """

    def __init__(self, tokenizer, prompt_len: int, eos_ids: set[int], every: int = 8,
                 config: DetectConfig | None = None, tail_tokens: int = 2048):
        self.tokenizer, self.prompt_len, self.eos_ids, self.every = tokenizer, prompt_len, eos_ids, every
        self.config = config or DetectConfig(metrics=False)
        self.tail_tokens = tail_tokens
        self.stopped: set[int] = set()
        self.ended: set[int] = set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new = input_ids.shape[1] - self.prompt_len
        if new > 0:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if token in self.eos_ids:
                    self.ended.add(row)  # finished by itself; padding follows
        for row in self.stopped:
            done[row] = True
        if new == 0 or new % self.every:
            return done
        start = max(self.prompt_len, input_ids.shape[1] - self.tail_tokens)
        for row in range(input_ids.shape[0]):
            if row in self.stopped or row in self.ended:
                continue
            if tail_loop(self.tokenizer.decode(input_ids[row, start:].tolist(), skip_special_tokens=True), self.config):
                self.stopped.add(row)
                done[row] = True
        return done


class TransformersSampler:
    name = "transformers"

    def __init__(self, model_path, device: str = "auto", *, tokenizer=None, processor=None):
        """``model_path``: a local path or hub id — or an already-loaded model with its ``tokenizer``
        (and ``processor``, for a VLM; the demo's build). Loading, dtype, device, padding and pad/EOS
        ids: ``core.loader``."""
        from core.loader import LoadError, load_model

        try:
            lm = load_model(model_path, device=device, purpose="generate", tokenizer=tokenizer, processor=processor)
        except LoadError as e:
            raise SamplerError(str(e)) from None
        if lm.vision and lm.processor is None:
            raise SamplerError(f"{model_path!r} has a vision part but no processor to read images with")
        self.model, self.tokenizer, self.processor, self.device = lm.model, lm.tokenizer, lm.processor, lm.device
        self.eos_ids, self.pad_id, self.context, self.vision = lm.eos_ids, lm.pad_id, lm.context, lm.vision
        self.dtype = lm.dtype

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        return chat_prompt(self.tokenizer, prompt, chat_template)

    def format_image_prompt(self, instruction: str, chat_template: str) -> str:
        return image_prompt(self.processor, instruction, chat_template)

    def _encode(self, reqs: list[Request]):
        """Tensors for a batch of requests: the tokenizer's, or the processor's with the page images."""
        if not self.vision:
            return self.tokenizer([r.prompt for r in reqs], return_tensors="pt", padding=True, add_special_tokens=False)
        missing = [r for r in reqs if r.image is None]
        if missing:
            raise ItemSkipped("this model reads page images and the item has none")
        return self.processor(images=[[r.image] for r in reqs], text=[r.prompt for r in reqs], return_tensors="pt",
                              padding=True, padding_side="left", add_special_tokens=False)

    def _prompt_tokens(self, r: Request) -> int | ItemSkipped:
        if not self.vision:
            return len(self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"])
        try:
            return int(self._encode([r])["input_ids"].shape[1])
        except ItemSkipped as e:
            return e
        except Exception as e:  # the processor refused this page or prompt: this item only
            return ItemSkipped(f"the processor cannot take this page and prompt ({type(e).__name__}: {e})")

    max_batch_rows = 64  # rows (requests x n) decoded together

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        """Requests of one kind (greedy, or n samples) share a `generate` call.

        A small model's per-step overhead dominates on CPU, so decoding a shard's items together is
        the big speed-up. A batch is deterministic given its requests (seeded with its first
        request's seed), and a resumed job re-forms the same shards, so it reproduces the same
        candidates. A prompt that would overrun the context with the full token limit is decoded
        alone, with the limit clamped, so it does not shorten the others'.
        """
        out: list = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        counted: dict[tuple, int | ItemSkipped] = {}
        for i, r in enumerate(requests):
            key = (r.prompt, id(r.image))  # an item's greedy and sampled requests share one count
            n_tok = counted[key] = counted[key] if key in counted else self._prompt_tokens(r)
            if isinstance(n_tok, ItemSkipped):
                out[i] = n_tok
                continue
            if self.context and n_tok >= self.context:
                out[i] = ItemSkipped(f"prompt of {n_tok} tokens does not fit the model's context of {self.context}")
                continue
            fits = not self.context or n_tok + decoding.max_new_tokens <= self.context
            groups.setdefault((r.greedy, r.n, fits), []).append(i)
        for (_, n, fits), idx in groups.items():
            size = max(1, self.max_batch_rows // max(1, n)) if fits else 1
            for s in range(0, len(idx), size):
                chunk = idx[s : s + size]
                for i, gens in zip(chunk, self._batch([requests[i] for i in chunk], decoding)):
                    out[i] = gens
        return out

    def _batch(self, reqs: list[Request], decoding: DecodingConfig) -> list[list[Generation]]:
        import torch
        from transformers import StoppingCriteriaList

        enc = self._encode(reqs)
        prompt_len = enc["input_ids"].shape[1]
        max_new = decoding.max_new_tokens
        if self.context:
            max_new = min(max_new, self.context - prompt_len)
        stop = _LoopStop(self.tokenizer, prompt_len, self.eos_ids) if decoding.early_stop else None
        torch.manual_seed(reqs[0].seed)
        kwargs = dict(do_sample=False) if reqs[0].greedy else dict(
            do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k or None
        )
        n = reqs[0].n
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **_on(enc, self.device, self.dtype), max_new_tokens=max_new,
                num_return_sequences=n, pad_token_id=self.pad_id,
                stopping_criteria=StoppingCriteriaList([stop]) if stop else None, **kwargs,
            )
        latency = time.perf_counter() - t0
        gens = []
        for row, ids in enumerate(out[:, prompt_len:].tolist()):
            end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
            if stop and row in stop.stopped:
                while ids and ids[-1] == self.pad_id:
                    ids.pop()
                reason = "repetition"
            elif end is not None:
                ids, reason = ids[: end + 1], "stop"
            else:
                while ids and ids[-1] == self.pad_id:
                    ids.pop()
                reason = "length" if len(ids) >= max_new else "stop"
            gens.append(Generation(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), reason, latency))
        return [gens[i * n : (i + 1) * n] for i in range(len(reqs))]


def _on(enc, device: str, dtype) -> dict:
    """A processor's or tokenizer's tensors on the model's device; pixel values in the weights' dtype."""
    return {k: (v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)) if hasattr(v, "is_floating_point") else v
            for k, v in enc.items()}
