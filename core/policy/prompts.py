"""Prompt format shared by training, sampling and evaluation.

The prompt ends without a trailing space ("...\\nJSON:") and the completion starts with one
(" {...}"): TRL warns that the tokenized prompt is not a prefix of prompt+completion when the
prompt ends in a space, because byte-level BPE attaches a leading space to the next token.
Later stages store the exact prompt string with each candidate, so this format is part of the
data: change it only together with a new model.
"""
from __future__ import annotations

__all__ = ["DEFAULT_INSTRUCTION", "build_prompt", "completion_for"]

DEFAULT_INSTRUCTION = "Transcreva o documento acima em JSON."


def build_prompt(text: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """Document text, then the instruction, ending in "JSON:" with no trailing space."""
    return f"{text.rstrip()}\n\n{instruction.strip()}\nJSON:"


def completion_for(reference: str) -> str:
    """The training completion for a reference transcription: a leading space, then the JSON."""
    return " " + reference.strip()
