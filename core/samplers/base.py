"""The sampler role: what every backend takes (requests, decoding) and gives back (generations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from core.config import option


@dataclass
class DecodingConfig:
    """How candidates are decoded; recorded with every candidate."""

    n: int = option(4, "sampled candidates per item")
    temperature: float = option(0.8, "sampling temperature (> 0)")
    top_p: float = option(0.95, "nucleus sampling: keep the smallest token set with this much probability")
    top_k: int = option(0, "keep only the k most likely tokens (0 = off)")
    max_new_tokens: int = option(512, "token limit per candidate; a loop runs until it")
    seed: int = option(0, "base seed; each item's seed derives from it and the item id")
    with_greedy: bool = option(True, "add the greedy decode as one more candidate: loops often appear only there")
    early_stop: bool = option(False, "stop a candidate once its tail is a confirmed loop (finish_reason 'repetition')")


@dataclass
class Request:
    prompt: str
    n: int
    greedy: bool
    seed: int
    image: Any = None  # the page (a PIL image) for a model that reads images; text-only backends ignore it


@dataclass
class Generation:
    text: str
    n_tokens: int
    finish_reason: str  # stop | length | repetition
    latency_s: float


class SamplerError(Exception):
    """A sampler that cannot work at all (no model, no tokenizer, server unreachable): the job fails."""


class ItemSkipped(Exception):
    """One item cannot be sampled (e.g. prompt longer than the context): it is skipped with the reason."""


class Sampler(Protocol):
    """What every backend offers (cf. lm-evaluation-harness's ``LM``): a name, the prompt as the model
    is fed it, and generations for a batch of requests, each the item's candidates or why it was skipped."""

    name: str
    vision: bool  # whether requests carry the page image (a vision-language model, or a server sent images)

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        """The exact string the model is fed for a built prompt (its chat template applied when asked)."""
        ...

    def format_image_prompt(self, instruction: str, chat_template: str) -> str:
        """A vision model's prompt: the page's image placeholder, then the instruction (no document text)."""
        ...

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        """One entry per request, in order: its n generations, or the reason it was skipped."""
        ...


def chat_prompt(tokenizer, prompt: str, chat_template: str) -> str:
    """``auto``: the tokenizer's chat template when it has one; ``on``: always; ``off``: the prompt as is.
    The backends that hold a tokenizer (transformers, vLLM) format prompts the same way through this."""
    use = chat_template == "on" or (chat_template == "auto" and getattr(tokenizer, "chat_template", None))
    if not use:
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def image_prompt(processor, instruction: str, chat_template: str) -> str:
    """A VLM's prompt as its processor's chat template renders an image part then the instruction
    (``auto``/``on``), or, without a template (``off``), the image placeholder where a text model's
    prompt has the document text. The image expands into its tokens only when the processor is called."""
    use = chat_template == "on" or (chat_template == "auto" and getattr(processor, "chat_template", None))
    if use:
        content = [{"type": "image"}, {"type": "text", "text": instruction.strip()}]
        return processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    from core.policy.prompts import build_prompt

    return build_prompt(processor.image_token, instruction)
