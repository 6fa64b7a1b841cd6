"""Four peer loop rules, re-implemented from their public sources, for bench/bench_detect_corpus.py.

Each is ``(text, finish_reason) -> bool``: "this output degenerated into a repetition loop". They
are small and follow the public rule with its public thresholds; where the original works on
token IDs or logits, the docstring says what stands in for them here. Rules that fire *while
generating* (vLLM, the llama.cpp port, Nougat) are checked once, on the end of the final text: an
output is degenerate when the rule holds at its tail, not when a loop sat somewhere in the middle.
Whisper's rule is a whole-text statistic and ignores the finish reason.

Tokens. vLLM and the llama.cpp port compare token IDs. Without a tokenizer, :func:`tokens` splits
the text into word-piece-like tokens the way GPT-2's pre-tokenizer does: each run of letters or
digits (letters in pieces of at most 8, digits in groups of at most 3, as BPE never makes
``aaaa...a`` one token), or each punctuation mark, with at most one leading space attached; other
whitespace (newlines, indentation) as tokens of its own, in pieces of at most 8; every CJK/Hangul
character its own token. Joining the tokens gives back the text exactly, so "exact repetition of
tokens" means exact repetition of text at token boundaries.
A text cut at the token limit may end inside one of these regex words, while the real model's BPE
stream ends on a whole sub-word token; so when the finish reason is not ``stop``, the token rules
are also tried without the last (possibly partial) token.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

__all__ = ["PEERS", "llamacpp_exact_tail", "nougat_tail", "tokens", "vllm_ngram", "whisper_compression"]

_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff"
# GPT-2's pre-tokenizer shape: " ?word| ?punct|\s+(?!\S)|\s+" (one leading space joins the token),
# letters cut into pieces of at most 8 and digits into groups of at most 3 (Llama-3's \p{N}{1,3}),
# and whitespace runs into pieces of at most 8, since BPE never makes "aaaa...a", a long number or
# a page of blank lines one token
_TOKEN = re.compile(rf" ?(?:[{_CJK}]|[^\W\d_{_CJK}]{{1,8}}|\d{{1,3}}|[^\w\s]|_+)|\s{{1,8}}(?!\S)|\s{{1,8}}")


def tokens(text: str) -> list[str]:
    """Regex stand-in for a BPE tokenizer (see the module docstring); ``"".join(tokens(t)) == t``."""
    return _TOKEN.findall(text or "")


def _tail_repeats(ids: Sequence, min_pattern_size: int, max_pattern_size: int, min_count: int) -> bool:
    """vLLM's ``check_sequence_repetition`` (naive algorithm), on any sequence of hashables.

    For each pattern length p in [min_pattern_size, max_pattern_size]: the last p items equal each
    of the (min_count - 1) blocks of p items before them. The loop stops at the first p with
    p * min_count > len(ids), as vLLM's does.
    """
    if min_pattern_size <= 0:
        min_pattern_size = 1
    if max_pattern_size <= 0 or min_count < 2 or min_pattern_size > max_pattern_size:
        return False
    n = len(ids)
    for p in range(min_pattern_size, max_pattern_size + 1):
        if p * min_count > n:
            return False
        ok = True
        for k in range(1, p + 1):  # vLLM's _has_repeating_pattern
            target = ids[-k]
            for m in range(1, min_count):
                if ids[-(p * m + k)] != target:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            return True
    return False


def _token_rule(text: str, finish_reason: str | None, lo: int, hi: int, count: int) -> bool:
    toks = tokens(text)
    if _tail_repeats(toks, lo, hi, count):
        return True
    # cut at the limit: the real BPE stream ended on a whole token, ours may end mid-word
    return finish_reason != "stop" and len(toks) > 1 and _tail_repeats(toks[:-1], lo, hi, count)


def vllm_ngram(text: str, finish_reason: str | None = None, *, min_pattern_size: int = 1,
               max_pattern_size: int = 1024, min_count: int = 3) -> bool:
    """vLLM ``SamplingParams.repetition_detection`` / ``RepetitionDetectionParams``.

    Source: vllm-project/vllm ``vllm/v1/core/sched/utils.py`` (``check_sequence_repetition``,
    ``_has_repeating_pattern``; called from ``check_stop`` after every sampled token, and on a hit
    the request ends with ``FINISHED_REPETITION`` / stop_reason ``"repetition_detected"``),
    https://github.com/vllm-project/vllm/blob/main/vllm/v1/core/sched/utils.py, and the
    parameter docs https://docs.vllm.ai/en/latest/api/vllm/sampling_params/ .

    Rule: the last tokens are one n-gram of size p, min_pattern_size <= p <= max_pattern_size,
    repeated min_count times back to back.

    Thresholds: vLLM ships the feature off (all three fields default to 0; max_pattern_size=0
    disables it, min_pattern_size=0 means 1, min_count must be >= 2). With no default to copy, this
    uses min_pattern_size=1 (what 0 means), min_count=3 (the field docstring's own example, "3 for
    detecting a phrase repeated 3 times", and vLLM's unit tests), and max_pattern_size=1024 (a
    value vLLM's tests accept under the default server cap of 2048, and the llama.cpp port's
    default), so that whole rows and paragraphs are in range.

    Finish reason: ``check_stop`` runs this after every token, before an EOS could end the text, so
    a final text whose tail satisfies the rule would have been stopped by it whatever the reported
    finish reason; it is checked on the tail of the final text only. Tokens: :func:`tokens`.
    """
    return _token_rule(text, finish_reason, min_pattern_size, max_pattern_size, min_count)


def llamacpp_exact_tail(text: str, finish_reason: str | None = None, *, min_pattern_size: int = 16,
                        max_pattern_size: int = 1024, min_count: int = 4) -> bool:
    """The exact repeated-tail check proposed for llama-server (llama.cpp).

    Mainline llama.cpp detects no loops: it only penalises (``repeat_penalty`` over
    ``repeat_last_n`` = 64 tokens, presence/frequency penalties, DRY with ``dry_allowed_length``).
    The closest public llama.cpp rule is the opt-in ``--repetition-detection`` of
    https://github.com/ggml-org/llama.cpp/pull/26039 ("server: add optional repetition
    detection", closed, not merged): "an optional circuit breaker for exact contiguous repetition
    at the tail of generated token IDs", modelled on vLLM's, with the default profile
    min_pattern_size = 16, max_pattern_size = 1024, min_count = 4; on a hit the server finishes the
    task.

    Rule: the tail of the text is one exact unit of 16..1024 tokens repeated 4 times back to back.
    Same tail check as :func:`vllm_ngram` (the PR ports it), with the PR's thresholds.
    Finish reason and tokens: as in :func:`vllm_ngram`.
    """
    return _token_rule(text, finish_reason, min_pattern_size, max_pattern_size, min_count)


def _nougat_repeating_tail(s: str, min_len: int = 30) -> bool:
    """True where Nougat's ``truncate_repetitions(s, min_len)`` would cut something.

    Nougat: lower-case the text; for rep_len in range(min_len, int(len / 2)) the tail repeats when
    the last rep_len characters equal the rep_len characters before them; no such rep_len -> the
    text is returned unchanged. The char-by-char loop is replaced by slice compares (same result);
    the first hit is enough here.
    """
    s = s.lower()
    n = len(s)
    if n < 2 * min_len:
        return False
    for rep_len in range(min_len, int(n / 2)):
        # cheap filters on both ends of the unit before comparing the slices
        if s[n - 1] != s[n - 1 - rep_len] or s[n - rep_len] != s[n - 2 * rep_len]:
            continue
        if s[n - 2 * rep_len:n - rep_len] == s[n - rep_len:]:
            return True
    return False


def nougat_tail(text: str, finish_reason: str | None = None, *, min_len: int = 30) -> bool:
    """Nougat's repetition rule at the end of its output, at the text level.

    Source: facebookresearch/nougat. Nougat has two rules:

    - logits (``nougat/model.py``, ``StoppingCriteriaScores(threshold=0.015, window_size=200)`` and
      the post-hoc check in ``NougatModel.inference``): the running variance of the max logit
      over a window goes flat (varvar < 0.045) when the model repeats itself; the page is marked
      as repeating only if generation did not end with EOS ("there is an end to the generation,
      likely no repetitions"). https://github.com/facebookresearch/nougat/blob/main/nougat/model.py
    - text (``nougat/postprocessing.py``, ``truncate_repetitions(s, min_len=30)``, called as the
      "obvious repetition detection" step of ``postprocess_single`` on the stripped output):
      find a rep_len >= 30 characters at which the tail repeats (last rep_len characters,
      lower-cased, equal to the rep_len before them) and cut the repeats.
      https://github.com/facebookresearch/nougat/blob/main/nougat/postprocessing.py

    Here: the text rule decides (the output is degenerate where ``truncate_repetitions`` would cut
    it), standing in for the logit rule, which needs the scores; from the logit rule it keeps the
    EOS gate: an output that ended with ``stop`` is not degenerate. Not reproduced: the logit
    rule's sensitivity to loops that are not exact (rows whose numbers change), and
    ``remove_hallucinated_references`` (near-duplicate reference lines anywhere in the page).
    """
    if finish_reason == "stop":
        return False
    return _nougat_repeating_tail((text or "").strip(), min_len)


def whisper_compression(text: str, finish_reason: str | None = None, *, threshold: float = 2.4) -> bool:
    """Whisper's "too repetitive" fallback: gzip-style (zlib) compression ratio above 2.4.

    Source: openai/whisper ``whisper/utils.py`` ``compression_ratio(text)`` =
    ``len(text_bytes) / len(zlib.compress(text_bytes))`` with ``text_bytes = text.encode("utf-8")``,
    and ``whisper/transcribe.py`` ``decode_with_fallback``: ``compression_ratio_threshold=2.4``
    (default of ``transcribe``), ``if decode_result.compression_ratio >
    compression_ratio_threshold: needs_fallback = True  # too repetitive``.
    https://github.com/openai/whisper/blob/main/whisper/utils.py ,
    https://github.com/openai/whisper/blob/main/whisper/transcribe.py

    A whole-text statistic: the finish reason plays no part (Whisper applies it to every decoded
    segment). Empty text compresses to more bytes than it has, ratio < 1: not degenerate.
    """
    data = (text or "").encode("utf-8", "surrogatepass")
    return len(data) / len(zlib.compress(data)) > threshold


PEERS = {
    "vllm_ngram": vllm_ngram,
    "llamacpp_exact_tail": llamacpp_exact_tail,
    "nougat_tail": nougat_tail,
    "whisper_cr": whisper_compression,
}
