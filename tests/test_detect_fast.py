"""The compiled loops (core/policy/_fast.c) give what the regex and rapidfuzz definitions give.

detect.py names the splits as regexes (_TOKEN, _SEGMENT_END, _DRIFT_TOKEN, _AMOUNT); here those
regexes, rapidfuzz's Indel and Levenshtein are the oracles, run on generated texts with near-repeated
units, digits, separators, CJK, accents and superscript digits.
"""

from __future__ import annotations

import random

from rapidfuzz import process
from rapidfuzz.distance import Indel, Levenshtein

from core.policy import _fast
from core.policy import detect as d

WORDS = "Parafuso porca arruela Relatório relatorio ação 的发票 Ωmega naïve ² x_y abc abd abcdef abcdeg".split()


def _texts(seed: int, n: int):
    rnd = random.Random(seed)

    def line():
        return " ".join(rnd.choice(WORDS) + (str(rnd.randint(0, 999)) if rnd.random() < 0.3 else "")
                        for _ in range(rnd.randint(1, 30)))

    def edit(s):
        s = list(s)
        for _ in range(rnd.randint(0, 3)):
            if s:
                s[rnd.randrange(len(s))] = rnd.choice("abcé的0 ")
        return "".join(s)

    for _ in range(n):
        base = [line() for _ in range(rnd.randint(1, 4))]
        units = [edit(base[i % len(base)]) if rnd.random() < 0.8 else line() for i in range(rnd.randint(3, 40))]
        text = rnd.choice(["\n", "}, ", ". ", "\n\n", " ", "。 "]).join(units)
        yield units, text[: rnd.randint(len(text) // 2, len(text))] if rnd.random() < 0.5 else text


def _ref_ngrams(text: str) -> tuple[int, ...]:
    tokens = d._TOKEN.findall(text)
    return (len(tokens), *(len(set(zip(*(tokens[i:] for i in range(n))))) for n in range(1, 5)))


def _ref_best(text: str, cutoff: float = 0.8):
    """(spans, best similarity per unit) as the Python detector computed them."""
    spans, pos = [], 0
    for m in d._SEGMENT_END.finditer(text):
        spans.append((pos, m.end()))
        pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    spans = [sp for sp in spans if not text[sp[0]:sp[1]].isspace()]
    norms = [d._AMOUNT.sub("0", text[a:b]).strip() for a, b in spans]
    best, last_seen = [0.0] * len(spans), {}
    for i, a in enumerate(norms):
        back = [*range(1, min(4, i) + 1)]
        j = last_seen.get(a[:12])
        last_seen[a[:12]] = i
        if j is not None and i - j > 4:
            back.append(i - j)
        for p in back:
            b = norms[i - p][:len(a)] if i == len(norms) - 1 else norms[i - p]
            if len(b) >= 8 and 0.7 <= len(a) / len(b) <= 1.4:
                sim = Indel.normalized_similarity(a, b)
                best[i] = max(best[i], sim if sim >= cutoff else 0.0)
    return spans, best


def _ref_novelty(units: list[str], period: int, warm: int):
    warm = max(warm, len(units) // 3)
    seen, order, sequences, numbers_seen = set(), [], set(), set()
    fresh_words, fresh_sequences, numbers, new_numbers = [], [], 0, 0
    for i, unit in enumerate(units):
        fresh, sequence = False, []
        for tok in d._DRIFT_TOKEN.findall(unit):
            if tok[0].isdigit():
                if i >= warm:
                    numbers += 1
                    new_numbers += tok not in numbers_seen
                numbers_seen.add(tok)
                continue
            if tok not in seen:
                near = process.extractOne(tok, order[-512:], scorer=Levenshtein.distance,
                                          score_cutoff=1 if len(tok) < 6 else 2) if order else None
                if near is None:
                    fresh = True
                    seen.add(tok)
                    order.append(tok)
                else:
                    tok = near[0]
            sequence.append(tok)
        if i >= warm:
            fresh_words.append(fresh)
            fresh_sequences.append(tuple(sequence) not in sequences)
        sequences.add(tuple(sequence))
    if len(fresh_words) < 2 * period:
        return 1.0, 1.0, 1.0
    cycles = [any(fresh_words[j:j + period]) for j in range(0, len(fresh_words), period)]
    return sum(cycles) / len(cycles), sum(fresh_sequences) / len(fresh_sequences), new_numbers / numbers if numbers else 0.0


def test_ngram_counts_split_as_the_token_regex():
    for _, text in _texts(1, 300):
        assert _fast.ngram_counts(text) == _ref_ngrams(text)
    big = " ".join(f"w{i % 5000} x" for i in range(40000))  # past the cache-sized buckets
    assert _fast.ngram_counts(big) == _ref_ngrams(big)
    assert _fast.ngram_counts([1, 2, 1, 2]) == (4, 2, 2, 2, 1)
    assert _fast.ngram_counts("") == (0, 0, 0, 0, 0)


def test_indel_matches_rapidfuzz():
    rnd = random.Random(2)
    for _ in range(3000):
        alphabet = rnd.choice(["ab", "abc é的", "abcdefghij0 "])
        a = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 150)))  # past one 64-bit word
        b = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 150)))
        assert abs(_fast.indel(a, b) - Indel.normalized_similarity(a, b)) < 1e-12


def test_drift_runs_cut_and_score_units_as_the_regexes():
    for _, text in _texts(3, 400):
        spans, best = _ref_best(text)
        for first, last, start, end, similarity, _p, same, _cut, bounds in _fast.drift_runs(text, 0.8, 2000, 1):
            assert bounds == [x for sp in spans[first:last + 1] for x in sp]
            assert (start, end) == (spans[first][0], spans[last][1])
            matched = [s for s in best[first:last + 1] if s >= 0.8]
            assert abs(similarity - sum(matched) / len(matched)) < 1e-12


def test_novelty_matches_its_definition():
    rnd = random.Random(4)
    for units, _ in _texts(5, 600):
        period, warm = rnd.randint(1, 3), rnd.randint(2, 3)
        assert _fast.novelty(units, period, warm) == _ref_novelty(units, period, warm)
