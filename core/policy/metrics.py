"""Quality of a transcription against its reference (DharmaOCR's score).

quality = (Levenshtein ratio + BLEU-4 / 100) / 2, both in [0, 1]. The reference judge reuses it.
"""
from __future__ import annotations

from rapidfuzz.distance import Levenshtein
from sacrebleu.metrics import BLEU

__all__ = ["bleu4", "levenshtein_ratio", "quality"]

_BLEU = BLEU(effective_order=True)


def levenshtein_ratio(candidate: str, reference: str) -> float:
    """Normalized Levenshtein similarity in [0, 1] (1 = identical; two empty strings = 1)."""
    return float(Levenshtein.normalized_similarity(candidate or "", reference or ""))


def bleu4(candidate: str, reference: str) -> float:
    """Sentence BLEU-4 (sacrebleu, effective order for short strings) scaled to [0, 1]."""
    if not candidate or not reference:
        return 1.0 if candidate == reference else 0.0
    return float(_BLEU.sentence_score(candidate, [reference]).score) / 100.0


def quality(candidate: str, reference: str) -> float:
    """(Levenshtein ratio + BLEU-4) / 2 against the reference, in [0, 1]."""
    return min(1.0, (levenshtein_ratio(candidate, reference) + bleu4(candidate, reference)) / 2.0)
