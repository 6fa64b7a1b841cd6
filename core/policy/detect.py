"""Degeneration detector: find the repetition loops in a candidate and decide if it degenerated.

A candidate is **degenerate** when it stopped for length (finish_reason ``length``, or
``repetition`` when loop-aware stopping cut it) and its tail is a **loop**: a unit of period p
repeated at least k times over at least c characters, up to the end. A loop inside an output that
still ended normally is reported as a loop, not as degeneration. With finish_reason unknown
(``None``) the candidate counts as degenerate only if its tail loop runs to the very last character
(a text that ran to the limit is cut mid-unit, so its periodicity reaches the end; one that ended
by itself and merely closes on a repeated line usually does too, which is why a known finish reason
is better).

Why not what the serving stacks do:

- vLLM ``repetition_detection`` (``min_pattern_size``, ``max_pattern_size``, ``min_count``) stops a
  request when its last tokens are one exact n-gram repeated ``min_count`` times. It over-fires on
  legitimate exact runs (``-----``/``=====`` rules, indentation, ``0, 0, 0`` columns, blank table
  rows) because it has no minimum span in characters, and it never sees the loops fine-tuned
  models actually produce: the same row with only its numbers changing is not an exact repeat.
- llama.cpp detects nothing; it penalises (``repeat_penalty`` over ``repeat_last_n`` = 64 tokens,
  presence/frequency penalties, DRY with ``dry_allowed_length`` and sequence breakers). Every
  recent token counts as repetition, so it punishes JSON keys, table pipes and field names that
  structured output must repeat, and it cannot tell you where a loop was.
- Whisper retries a segment whose gzip compression ratio exceeds 2.4. That is a whole-text
  statistic: a JSON array of similar objects or a table compresses past 2.4 with no loop at all,
  short texts are noisy, and it cannot locate the loop or tell an ended loop from a degenerate tail.
  We report the ratio as a metric only.

How loops are found (linear time). The text is scanned as UTF-8 bytes: the raw bytes when it has
no digits, else the bytes with every digit run collapsed to one ``0`` (which hold both exact loops
and templated ones: ``| Parafuso sextavado | 3 | 12,50 |`` then ``| ... | 4 | ... |``; an
exact-repeat check misses all of them, masking digit runs finds them). In each domain, checkpoints
every ``s`` bytes take the ``a``-byte anchor there and look for its nearest earlier occurrence at
distance d in a window (``bytes.rfind``, C speed); a hit is verified by galloping slice compares
that extend the stretch where ``s[i] == s[i + d]`` both ways. Periods are split into doubling tiers
(1–64, 65–128, …, ``max_period``); a tier's spacing is the largest that still puts one checkpoint
inside any loop long enough to qualify (k·p bytes, c chars), so each tier costs O(n) and the
tiers together a small constant times n — no O(n²) scan over periods; a tier whose shortest
qualifying stretch is longer than the text is not scanned. Found stretches are skipped, and every
byte is extended over at most a few times. The checkpoints' ``rfind`` calls are most of the cost;
collapsing digit runs and mapping collapsed offsets back to the text are numpy passes (the offset
table is built only for a text whose collapsed domain has a loop). A templated stretch must carry
real words (letters outside ``"key":``/``Label:``) so a bare list of CPFs or codes cut at the
limit is not a loop; one whose only number counts up by a fixed step with at most one word
(``item 1, item 2``) is a **counting** loop, reported with its own flag and not degenerate by
default.

What real models add (tests/data/detect_corpus, issue 16). The numbers of a templated stretch are
read slot by slot: an ordered key (a step, a time) beside new values is a log, values that differ
in every unit as a name's suffix or a long id are an enumeration (paths, keys), new or unevenly
rising values with no words are data (CPFs, a timetable) — none of these is a loop; constant,
cycling or fixed-step values are. **Drifting** loops — a heading re-read with a letter changing,
invoice rows cycling over a few descriptions — are found on units (lines, sentences, a JSON
array's objects): each like one shortly before it (rapidfuzz's bit-parallel Indel similarity,
numbers masked), and the later units bringing almost no new word, word sequence or number.
At a limit stop, a short unit repeated 16 times or a long one (a paragraph) twice is a loop under
the usual thresholds; a loop cut mid-word under ``stop`` is degenerate with a ``note``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import deque
import zlib
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from itertools import islice
from typing import Iterable, TextIO

import numpy as np

from core.policy import _fast

LIMIT_REASONS = ("length", "repetition")

_ANCHOR = 8  # bytes compared at each checkpoint; long enough to make chance hits rare
_TRIES = 2  # earlier occurrences of one anchor tried before moving on
_DIGIT_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LABEL = re.compile(r'"[^"\n]{0,60}"\s*:|[^\W\d_]+\s*:')
_WORD = re.compile(r"[^\W\d_]+")
_NUMBER = re.compile(r"\d+")
_AMOUNT = re.compile(r"\d+(?:[.,]\d+)*")  # a number as the collapsed domain sees it: 1.400,00 is one
_NO_SEPARATORS = str.maketrans("", "", ".,:/-")
_NAME_BEFORE = re.compile(r"[^\W\d]+[_-]?$|$")  # the name a glued number ends (``shard-`` of shard-12659)
_VALUE = re.compile(r"\d+(?:[.,:/-]\d+)*")  # a value as a person reads it: times, dates and phone numbers whole
_SEGMENT_END = re.compile(r"\n|\}\s*,\s*|(?<=[.!?。])\s+(?=\S)")  # units of a drifting loop: lines, sentences, a JSON array's objects
_DRIFT_TOKEN = re.compile(r"[^\W\d_]{3,}|\d+(?:[.,:/]\d+)*")  # words, and numbers with times and dates whole
_INFO_UNITS = 64  # units of a repeated structure whose numbers are read: by then a log, a list of ids or a loop shows itself
_TOKEN = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\U00020000-\U0002ffff]|\w+|[^\w\s]")


@dataclass
class DetectConfig:
    """Thresholds of the detector; every field has a default and a one-line help."""

    min_repeats: int = field(default=3, metadata={"help": "k: times an exact unit must repeat to be a loop (vLLM's min_count)."})
    min_chars: int = field(default=100, metadata={"help": "c: characters a loop must cover; keeps short texts and short runs out."})
    min_chars_punct: int = field(default=200, metadata={"help": "characters a loop of a unit with no letter or digit (spaces, -----, ....) must cover; keeps separators out."})
    max_period: int = field(default=2000, metadata={"help": "longest unit, in characters, searched for (a whole JSON object, table row or repeated reasoning paragraph)."})
    mask_digits: bool = field(default=True, metadata={"help": "also find templated loops: units identical once every digit run is masked."})
    templated_min_repeats: int = field(default=4, metadata={"help": "times a templated unit must repeat; more than k because legit tables repeat a description a few times."})
    templated_min_letters: int = field(default=4, metadata={"help": "letters outside keys/labels a templated unit needs, so bare number lists (CPFs, codes) are not loops."})
    drift: bool = field(default=True, metadata={"help": "also find drifting loops: lines, sentences or JSON objects repeated with small changes (letters too) that bring nothing new."})
    drift_similarity: float = field(default=0.8, metadata={"help": "how alike (Indel similarity, numbers masked) a unit must be to one of the 4 before it, or to the last that opened the same way, to continue a drifting loop."})
    drift_min_repeats: int = field(default=6, metadata={"help": "units a drifting loop needs; more than an exact loop, since near-repeats also occur in legit lists."})
    drift_max_novelty: float = field(default=0.5, metadata={"help": "most share of a drifting loop's later cycles that may bring a new word (not a small edit of one seen): a real list brings one every cycle."})
    drift_max_sequence_novelty: float = field(default=0.7, metadata={"help": "most share of a drifting loop's later units that may bring a new sequence of words: a list recombining a few words brings one in every unit."})
    drift_max_number_novelty: float = field(default=0.6, metadata={"help": "most share of new numbers in a drifting loop's later units: more is data (a log, measurements), not a loop."})
    short_min_repeats: int = field(default=16, metadata={"help": "at a limit stop, a tail of a short unit (letters, digits or CJK) repeated this many times is a loop even under min_chars."})
    short_min_chars: int = field(default=32, metadata={"help": "characters such a short tail loop must still cover."})
    long_unit_chars: int = field(default=300, metadata={"help": "at a limit stop, a unit this long (a paragraph, a code block) repeated twice at the tail is a loop; near-repeated, 3 times."})
    counting_is_degenerate: bool = field(default=False, metadata={"help": "count a counting loop (item 1, item 2, ...) at the limit as degeneration."})
    tail_slack: int = field(default=8, metadata={"help": "a loop ending this many characters before the end of a length-stopped text is still its tail (a stray last token)."})
    tail_window: int = field(default=8192, metadata={"help": "characters from the end that tail_loop() scans, so loop-aware stopping costs O(window) per call."})
    metrics: bool = field(default=True, metadata={"help": "compute seq-rep-n, distinct-n and compression ratio (off on the mining hot path)."})


@dataclass
class Loop:
    """One loop: ``text[start:end]`` is ``unit`` repeated ``repeats`` times (the last may be cut)."""

    start: int
    end: int
    period: int
    repeats: float
    unit: str
    templated: bool = False
    counting: bool = False
    at_tail: bool = False
    kind: str = "exact"  # exact | templated | counting | drifting | short
    drift: float = 0.0  # drifting loops: how much a repeat differs from the one it repeats (1 - similarity)

    def to_dict(self) -> dict:
        return asdict(self)

    def why(self) -> str:
        """One line a person reads: the kind of loop, its unit and repeats (and the drift)."""
        unit = self.unit if len(self.unit) <= 60 else self.unit[:57] + "..."
        extra = f", repeats differ by {self.drift:.0%}" if self.kind == "drifting" else ""
        return f"{self.kind} loop of {self.repeats:g} × {unit!r} ({self.period} chars{extra})"


@dataclass
class DetectResult:
    """What ``analyze`` found: the verdict, the loops and the standard repetition metrics."""

    degenerate: bool
    has_loop: bool
    loops: list[Loop]
    finish_reason: str | None
    metrics: dict
    note: str | None = None  # e.g. the finish reason and the text disagree

    def why(self) -> str | None:
        """Why the verdict: the loop that ends the text (degenerate) or the longest one (a loop inside)."""
        tail = next((lp for lp in reversed(self.loops) if lp.at_tail), None) if self.degenerate else None
        loop = tail or max(self.loops, key=lambda lp: lp.end - lp.start, default=None)
        return loop.why() if loop else None

    def to_dict(self) -> dict:
        return {
            "degenerate": self.degenerate,
            "has_loop": self.has_loop,
            "finish_reason": self.finish_reason,
            "why": self.why(),
            "note": self.note,
            "loops": [loop.to_dict() for loop in self.loops],
            "metrics": self.metrics,
        }


# ---------------------------------------------------------------- periodic stretches in bytes


def _back(s: bytes, d: int, x: int) -> int:
    """Smallest lo with s[i] == s[i + d] for all i in [lo, x): gallop backwards, then bisect."""
    step = 16
    while x > 0:
        b = min(step, x)
        if s[x - b:x] == s[x - b + d:x + d]:
            x -= b
            step <<= 1
            continue
        lo, hi = x - b, x
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if s[mid:x] == s[mid + d:x + d]:
                hi = mid
            else:
                lo = mid
        return hi
    return 0


def _fwd(s: bytes, d: int, x: int) -> int:
    """Largest e with s[i] == s[i + d] for all i in [x, e): gallop forwards, then bisect."""
    ceil = len(s) - d
    step = 16
    while x < ceil:
        b = min(step, ceil - x)
        if s[x:x + b] == s[x + d:x + d + b]:
            x += b
            step <<= 1
            continue
        lo, hi = x, x + b
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if s[x:mid] == s[x + d:mid + d]:
                lo = mid
            else:
                hi = mid
        return lo
    return max(x, ceil)


def _spacing(p_lo: int, p_hi: int, k: int, min_len: int, a: int) -> int:
    """Largest checkpoint spacing that still lands a checkpoint j with [j - p, j + a) inside any
    qualifying stretch of period p in (p_lo, p_hi]: its length max(min_len, k·p) minus p + a."""
    ps = {p_lo + 1, p_hi, min(max(min_len // k, p_lo + 1), p_hi)}
    return max(1, min(max(min_len, k * p) - p - a + 1 for p in ps))


@lru_cache(maxsize=256)
def _tiers(max_p: int, k: int, min_len: int) -> tuple[tuple[int, int, int, int, int], ...]:
    """(p_lo, p_hi, anchor, spacing, shortest qualifying stretch) of each period tier, computed once."""
    tiers, p_lo = [], 0
    while p_lo < max_p:
        p_hi = min(max_p, 64 if p_lo == 0 else 2 * p_lo)
        a = _ANCHOR if p_lo == 0 else min(64, p_lo // 2)
        tiers.append((p_lo, p_hi, a, _spacing(p_lo, p_hi, k, min_len, a), max(min_len, k * (p_lo + 1))))
        p_lo = p_hi
    return tuple(tiers)


def _stretch(s: bytes, i: int, j: int, a: int, k: int, min_len: int) -> tuple[int, int, int] | None:
    """The periodic stretch through an a-byte anchor at i repeated at j, if it can qualify.

    A qualifying stretch holds [i, j + a) and is need = max(min_len, k·d) long, so it extends at
    least (need - d - a) // 2 bytes on one side: two slice compares reject most chance hits
    (JSON keys, table pipes) before any galloping.
    """
    d = j - i
    need = max(min_len, k * d)
    h = (need - d - a) // 2
    if h > 0 and not ((i >= h and s[i - h:i] == s[j - h:j]) or s[i + a:i + a + h] == s[j + a:j + a + h]):
        return None
    lo = _back(s, d, i)
    hi = _fwd(s, d, i + a) + d
    return (lo, hi, d) if hi - lo >= need else None


def _probe(s: bytes, i: int, j: int, a: int, k: int, min_len: int, p_hi: int) -> tuple[int, int, int] | None:
    """The stretch through checkpoint j's anchor, trying its last _TRIES occurrences (i the last)."""
    for _ in range(_TRIES - 1):
        st = _stretch(s, i, j, a, k, min_len)
        if st:
            return st
        i = s.rfind(s[j:j + a], j - p_hi if j > p_hi else 0, i + a - 1)
        if i < 0:
            return None
    return _stretch(s, i, j, a, k, min_len)


def _scan(s: bytes, max_p: int, k: int, min_len: int) -> list[tuple[int, int, int]]:
    """Every periodic stretch (lo, hi, d) of s with d <= max_p, hi - lo >= max(min_len, k·d).

    Periods go in doubling tiers; tiers of long periods use long anchors (a stretch of period
    > 64 is >= 3·64 bytes long), which keeps chance hits on a text's structure rare.
    """
    n = len(s)
    found: list[tuple[int, int, int]] = []
    if n < max(min_len, 2 * _ANCHOR):
        return found
    rfind = s.rfind
    skips = [(n, n)]
    for p_lo, p_hi, a, step, shortest in _tiers(max_p, k, min_len):
        if shortest > n:
            break  # no stretch of a longer period fits in the text
        last = n - a
        if found:  # stretches already found (by smaller periods) are skipped: (start, resume) pairs
            skips = sorted((lo + p_lo, hi - a + 1) for lo, hi, _ in found)
            skips.append((n, n))
        si, skip_from, skip_to = 0, skips[0][0], skips[0][1]
        tier: list[tuple[int, int, int]] = []
        off = a - p_lo - 1  # a checkpoint j searches [j - p_hi, j + off): distances in (p_lo, p_hi]
        j = p_lo + 1
        while j <= last:
            if j >= skip_from:
                if j < skip_to:
                    j = skip_to
                si += 1
                skip_from, skip_to = skips[si]
                continue
            # checkpoints up to the next skip, as a plain for loop: most of them miss
            for j in range(j, min(skip_from, last + 1), step):
                i = rfind(s[j:j + a], j - p_hi if j > p_hi else 0, j + off)
                if i >= 0 and (st := _probe(s, i, j, a, k, min_len, p_hi)):
                    tier.append(st)
                    j = max(j, st[1] - a + 1)  # resume after the stretch, on a new lattice
                    break
            else:
                j += step
        found += tier
    return found


def _tail(s: bytes, max_p: int, k: int, min_len: int) -> tuple[int, int, int] | None:
    """The periodic stretch that ends s, with the smallest period that qualifies, or None."""
    n = len(s)
    if n < max(min_len, 2 * _ANCHOR):
        return None
    key = s[n - _ANCHOR:]
    start = max(0, n - _ANCHOR - max_p)
    i = s.rfind(key, start, n - 1)
    tries = 4 * _TRIES
    while i >= 0 and tries:
        d = n - _ANCHOR - i
        x = n - max(min_len, k * d)  # the stretch qualifies iff it starts at or before x
        if x >= 0 and (x >= i or (s[x] == s[x + d] and s[x:i] == s[x + d:i + d])):
            return _back(s, d, min(x, i)), n, d
        tries -= 1
        i = s.rfind(key, start, i + _ANCHOR - 1)
    return None


# ---------------------------------------------------------------- from byte stretches to loops


class _Text:
    """A text with its UTF-8 bytes, digit-masked bytes, and the collapsed domain built only when needed."""

    def __init__(self, text: str):
        self.text = text
        self.raw = text.encode("utf-8", "surrogatepass")
        self.ascii = len(self.raw) == len(text)
        masked = self.raw.translate(_DIGIT_TO_ZERO)
        self.has_digits = b"0" in masked
        self.masked = masked
        self._collapsed: bytes | None = None
        self._keep: np.ndarray | None = None
        self._kept: np.ndarray | None = None  # dropped digits' offsets less those before them
        self._last = (0, 0)  # (byte offset on a character boundary, its character offset)

    @property
    def collapsed(self) -> bytes:
        """Masked bytes with every number reduced to one ``0`` (one numpy pass).

        A number is a digit run with its inner separators: ``1.400,00`` and ``10,00`` both become
        ``0``, so rows whose amounts change magnitude still read as the same template.
        """
        if self._collapsed is None:
            m = np.frombuffer(self.masked, np.uint8).copy()
            if len(m) > 2:
                inner = m[1:-1]
                inner[((inner == 44) | (inner == 46)) & (m[:-2] == 48) & (m[2:] == 48)] = 48
                if m[-1] in (44, 46) and m[-2] == 48:  # cut at the limit inside a number ("12,")
                    m[-1] = 48
            other = m != 48
            self._keep = np.concatenate(([True], other[1:] | other[:-1]))  # all but a 0 right after a 0
            self._collapsed = m[self._keep].tobytes()
        return self._collapsed

    def from_collapsed(self, x: int) -> int:
        """Byte offset in the raw text of collapsed offset x (start of a collapsed digit run maps
        to the start of the run; offsets after it skip the run's extra digits). Built once, in
        numpy, only for a text whose collapsed domain has a loop: the dropped digits' offsets, each
        less the count dropped before it, so the x-th kept byte is x plus those at or before x."""
        if self._kept is None:
            dropped = np.flatnonzero(~self._keep)
            self._kept = dropped - np.arange(len(dropped))
        if x >= len(self._collapsed):
            return len(self.raw)
        return x + int(np.searchsorted(self._kept, x, "right"))

    def char(self, x: int, forward: bool) -> int:
        """Character offset of byte offset x, moved onto a character boundary."""
        raw = self.raw
        if self.ascii:
            return x
        step = 1 if forward else -1
        while 0 < x < len(raw) and raw[x] & 0xC0 == 0x80:
            x += step
        # decode on from the last offset asked for when x is past it (loops come in order), so a
        # long text with many loops is decoded about once rather than once per loop
        base, chars = self._last if self._last[0] <= x else (0, 0)
        chars += len(raw[base:x].decode("utf-8", "surrogatepass"))
        self._last = (x, chars)
        return chars


def _value_letters(unit: str) -> int:
    """Letters of a unit outside ``"key":`` and ``Label:``: what makes a row carry real words."""
    return sum(len(w) for w in _WORD.findall(_LABEL.sub("", unit)))


def _is_counting(span: str, unit: str, repeats: float) -> bool:
    """One number per unit, moving by one fixed non-zero step, and at most one word."""
    if len(_WORD.findall(unit)) > 1:
        return False
    numbers = [int(x) for x in _NUMBER.findall(span)]
    whole = int(repeats)
    if whole < 3 or not (whole <= len(numbers) <= whole + 1):
        return False
    numbers = numbers[:whole]
    step = numbers[1] - numbers[0]
    return step != 0 and all(b - a == step for a, b in zip(numbers, numbers[1:]))


class _Slot:
    """One number position across the units of a repeated structure: its values (separators dropped,
    so ``1.400,00`` is 140000: only order and steps matter), whether they were written as a name's
    suffix (``shard-12659``, ``.mt-3``, ``pagina_000123``), and whether they had a separator."""

    def __init__(self, matches: list[re.Match]):
        self.values = [int(m.group().translate(_NO_SEPARATORS)[:18]) for m in matches]
        self.glued = sum(_is_glued(m) for m in matches) > len(matches) / 2
        self.plain = all(m.group().isdigit() for m in matches)
        self.kind = _behaviour(self.values)

    def identifies(self) -> bool:
        """Every unit gets its own value, written as a name's suffix or as a long bare integer: an id."""
        distinct = len(set(self.values)) == len(self.values)
        return distinct and (self.glued or (self.plain and min(self.values) >= 1000))


def _is_glued(m: re.Match) -> bool:
    before = m.string[m.start() - 1:m.start()]
    return bool(before) and (before.isalpha() or (before in "_-" and m.string[m.start() - 2:m.start() - 1].isalnum()))


def _slots(units: list[str]) -> list[_Slot]:
    """The number slots of a run of units, one per position, for every group of at least 4 units that
    hold the same count of numbers (a log alternates an epoch line and a metrics line)."""
    found = [list(_VALUE.finditer(u)) for u in units]
    groups: dict[int, list[list[re.Match]]] = {}
    for f in found:
        groups.setdefault(len(f), []).append(f)
    return [_Slot([f[j] for f in same]) for per, same in groups.items() if per and len(same) >= 4 for j in range(per)]


def _names_units(units: list[str]) -> bool:
    """Each unit names a new thing: the values written as a name's suffix or as a long id (a path's
    run, checkpoint and shard; a product's image) differ in every unit. A row counter beside ids
    that cycle does not count: that is an invented table going round."""
    names = set()
    for u in units:
        name = []
        for m in _VALUE.finditer(u):
            if _is_glued(m):
                name.append(_NAME_BEFORE.search(u, 0, m.start()).group() + m.group())  # mt-3, pr-3
            elif m.group().isdigit() and len(m.group()) >= 4:
                name.append(m.group())
        if not name or (name := tuple(name)) in names:
            return False
        names.add(name)
    return True


def _behaviour(v: list[int]) -> str:
    """constant, progression (one fixed step, a wrap or two allowed), monotone,
    recurring (values come back: a cycle), or novel (mostly new values in no order: data)."""
    if len(set(v)) == 1:
        return "constant"
    steps = [b - a for a, b in zip(v, v[1:])]
    moves = [x for x in steps if x]
    step = max(set(moves), key=moves.count) if moves else 0
    if moves and moves.count(step) >= 0.75 * len(moves) and len(moves) >= len(steps) / 3:
        return "progression"  # one fixed step, pauses allowed (a time range's end is the next one's start)
    if (all(x >= 0 for x in steps) or all(x <= 0 for x in steps)) and len(set(v)) >= max(3, len(v) / 8):
        return "monotone"  # keeps moving through many values, a few units per value (times in a log)
    return "novel" if len(set(v)) > len(v) / 2 else "recurring"


def _information(units: list[str], lettered: bool, slots: list[_Slot] | None = None) -> str | None:
    """What the numbers of a repeated structure carry: ``log`` (an ordered key — a step, a time —
    beside new values: a training log, dated records), ``id`` (each unit names a new thing: paths,
    keys, a scale of CSS classes), ``data`` (new or unevenly rising values and no words repeating:
    CPFs, codes, a timetable), or None: constant, cycling, counting by a fixed step, or random beside
    fixed words — no information, a loop. The first ``_INFO_UNITS`` units are read, so a long
    loop costs no more than a short one."""
    units = units[:_INFO_UNITS]
    slots = _slots(units) if slots is None else slots
    kinds = {sl.kind for sl in slots}
    if "novel" in kinds and kinds & {"progression", "monotone"}:
        return "log"
    if any(sl.identifies() for sl in slots) or _names_units(units):
        return "id"
    if kinds & {"novel", "monotone"} and not lettered:
        return "data"  # new values, or values that rise unevenly (a timetable), and no words to repeat
    return None


def _template_kind(span: str, unit: str, repeats: float, lettered: bool) -> str | None:
    """Whether a stretch that repeats once numbers are masked is a loop: ``templated`` (no new
    information), ``counting`` (an enumeration: ``item 7``, ``.../frame_000123.png``), or None when
    its numbers carry information (a log, data)."""
    if _is_counting(span, unit, repeats):
        return "counting"
    units = _split_units(span, unit, min(repeats, _INFO_UNITS))
    slots = _slots(units)
    info = _information(units, lettered, slots)
    if info == "id" and lettered:
        return "counting"
    if info:
        return None
    return "templated" if lettered or any(sl.kind != "constant" for sl in slots) else None


def _split_units(span: str, unit: str, repeats: float) -> list[str]:
    """The whole units of a templated stretch: the span cut after every ``per``-th number (units
    differ in length as their numbers do)."""
    per, whole = len(_AMOUNT.findall(unit)), int(repeats)
    if not per:
        return [unit] * whole
    ends = [m.end() for m in islice(_AMOUNT.finditer(span), per * whole)][per - 1::per]
    return [span[a:b] for a, b in zip([0, *ends], ends)]


def _from_collapsed(t: _Text, lo: int, hi: int, d: int, cfg: DetectConfig) -> Loop | None:
    """A stretch of the collapsed domain as a Loop in text coordinates: exact when the raw bytes
    repeat too (then re-extended in the raw bytes), templated when only the masked ones do."""
    raw_lo, raw_first = t.from_collapsed(lo), t.from_collapsed(lo + d)
    raw_hi = len(t.raw) if hi >= len(t.collapsed) else t.from_collapsed(hi)
    rd = raw_first - raw_lo
    if rd <= 0:
        return None
    if t.raw[raw_lo:raw_hi - rd] == t.raw[raw_first:raw_hi]:
        return _exact(t, _back(t.raw, rd, raw_lo), _fwd(t.raw, rd, raw_lo) + rd, rd, cfg)
    text = t.text
    start, first, end = t.char(raw_lo, True), t.char(raw_first, True), t.char(raw_hi, False)
    while start < first and unicodedata.combining(text[start]):
        start += 1
    repeats = (hi - lo) / d
    if first <= start or hi - lo < cfg.min_chars or repeats < cfg.templated_min_repeats:
        return None
    unit = text[start:first]
    kind = _template_kind(text[start:end], unit, repeats, _value_letters(unit) >= cfg.templated_min_letters)
    if kind is None:
        return None
    return Loop(start, end, first - start, round(repeats, 2), unit, True, kind == "counting", end >= len(text) - cfg.tail_slack, kind)


def _exact(t: _Text, lo: int, hi: int, d: int, cfg: DetectConfig) -> Loop | None:
    """A stretch of the raw domain as an exact Loop, if it qualifies in characters."""
    text = t.text
    raw = t.raw
    while lo < hi and raw[lo] & 0xC0 == 0x80:
        lo += 1  # onto a character boundary: a unit of d bytes is then whole characters
    start, end = t.char(lo, True), t.char(hi, False)
    period = len(raw[lo:lo + d].decode("utf-8", "replace"))
    while start < end and unicodedata.combining(text[start]):
        start += 1
    if period <= 0 or end - start < period:
        return None
    unit = text[start:start + period]
    floor = cfg.min_chars if any(ch.isalnum() for ch in unit) else cfg.min_chars_punct
    repeats = (end - start) / period
    if end - start < floor or repeats < cfg.min_repeats:
        return None
    return Loop(start, end, period, round(repeats, 2), unit, False, False, end >= len(text) - cfg.tail_slack)


def _max_bytes(t: _Text, cfg: DetectConfig) -> int:
    """max_period in bytes for this text (its mean bytes per character, rounded up)."""
    per_char = -(-len(t.raw) // max(1, len(t.text)))
    return cfg.max_period * per_char


def _merge(loops: list[Loop]) -> list[Loop]:
    """Sort loops and keep the longer of any two that overlap by more than half of the shorter."""
    kept: list[Loop] = []
    for loop in sorted(loops, key=lambda x: (x.start, -(x.end - x.start))):
        if kept:
            prev = kept[-1]
            overlap = min(prev.end, loop.end) - max(prev.start, loop.start)
            if overlap > 0.5 * min(prev.end - prev.start, loop.end - loop.start):
                if loop.end - loop.start > prev.end - prev.start:
                    kept[-1] = loop
                continue
        kept.append(loop)
    return kept


def _novelty(units: list[str], period: int, warm: int = 3) -> tuple[float, float, float]:
    """What a run's later units (after the first third) bring that is new: the share of its cycles
    (``period`` units each) with a new word, the share of its units with a new sequence of words
    (a word within a small edit of one seen before counts as that word, so OCR drift that re-reads
    a heading with a letter changed brings nothing), and the share of its numbers not seen before.
    A loop brings little; a real list brings a new name every cycle, or new combinations of a few
    words in every unit. Words are ``_DRIFT_TOKEN``'s (letters, 3 or more) and numbers with their
    inner ``.,:/``; a near word (Levenshtein 1, or 2 from 6 letters) is looked for among the 512
    words last added. Compiled (``_fast.novelty``): one pass over the units' characters."""
    return _fast.novelty(units, period, warm)


def _drift_loops(text: str, cfg: DetectConfig) -> list[Loop]:
    """Loops whose units (lines, sentences, a JSON array's objects) repeat with small changes, letters
    included: each unit is like one of the 4 before it or the last unit that opened the same way (a
    paragraph's sentences, a block's lines), numbers masked, over at least drift_min_repeats units
    (3 long ones) and min_chars, and the later units bring almost nothing new and carry no ids or
    log keys. A cut last unit is compared with the start of the one it repeats. Linear: at most 5
    bit-parallel similarities per unit."""
    runs = _fast.drift_runs(text, cfg.drift_similarity, cfg.max_period, cfg.drift_min_repeats)
    loops = []
    for first, last, start, end, similarity, period, same, cut_after, bounds in runs:
        n = last - first + 1
        need = 3 if (end - start) / n >= cfg.long_unit_chars else cfg.drift_min_repeats  # a paragraph re-read 3 times
        if n < need or end - start < cfg.min_chars or same:
            continue  # short, or the same once numbers are masked: the templated rule decides those
        units = [text[a:b] for a, b in zip(bounds[::2], bounds[1::2])]
        words, sequences, numbers = _novelty(units, period, warm=min(3, need - 1))
        if words > cfg.drift_max_novelty or sequences > cfg.drift_max_sequence_novelty or numbers > cfg.drift_max_number_novelty:
            continue
        if _information(units, True):
            continue  # a log, a list of paths or keys: the numbers are what is new
        unit = units[0]
        # at the tail also when only one unit follows, cut short by the limit (it may have drifted further)
        at_tail = end >= len(text) - cfg.tail_slack or cut_after
        loops.append(Loop(start, end, len(unit), float(n), unit, at_tail=at_tail,
                          kind="drifting", drift=round(1 - similarity, 3)))
    return loops


def _limit_tail(t: _Text, cfg: DetectConfig) -> Loop | None:
    """Tails that are degenerate only because the limit cut them, under the usual k and c: a short
    unit with a letter, digit or CJK character (``的的的``, ``ha ha``) repeated short_min_repeats times,
    or a long unit (a paragraph, a code block: long_unit_chars or more) repeated twice and cut."""
    st = _tail(t.raw, 8 * _max_bytes(t, cfg) // cfg.max_period, cfg.short_min_repeats, cfg.short_min_chars)
    loop = _exact(t, *st, replace(cfg, min_chars=cfg.short_min_chars, min_repeats=cfg.short_min_repeats)) if st else None
    if loop is not None and any(ch.isalnum() for ch in loop.unit):
        loop.kind = "short"
        return loop
    st = _tail(t.raw, _max_bytes(t, cfg), 2, 2 * cfg.long_unit_chars)
    loop = _exact(t, *st, replace(cfg, min_repeats=2)) if st else None
    return loop if loop is not None and loop.period >= cfg.long_unit_chars else None


def _with_drift(loops: list[Loop], text: str, cfg: DetectConfig) -> list[Loop]:
    """Add the drifting loops that are not an exact or templated loop already found (or reach more than
    two units further: a templated loop whose rows drift apart later)."""
    if not cfg.drift:
        return loops
    for d in _drift_loops(text, cfg):
        if all(min(d.end, x.end) - max(d.start, x.start) <= 0 or d.end - d.start > x.end - x.start + 2 * d.period for x in loops):
            loops.append(d)
    return _merge(loops)


def find_loops(text: str, config: DetectConfig | None = None) -> list[Loop]:
    """All loops of a text, exact and templated, in order of position.

    A text with digits is scanned once, in the collapsed domain, which holds both kinds; raw
    bytes are scanned too only where collapsing hides a loop: a run of >= c digits anywhere,
    and the tail (a digit-heavy exact loop, ``123.456.789-00`` again and again, shrinks below c
    once collapsed; mid-text such a loop is reported only if it still covers c collapsed bytes).
    """
    cfg = config or DetectConfig()
    t = _Text(text)
    max_p = _max_bytes(t, cfg)
    min_len = min(cfg.min_chars, cfg.min_chars_punct)
    k = min(cfg.min_repeats, cfg.templated_min_repeats)
    if not (cfg.mask_digits and t.has_digits):
        loops = [lp for st in _scan(t.raw, max_p, cfg.min_repeats, min_len) if (lp := _exact(t, *st, cfg))]
        return _with_drift(_merge(loops), text, cfg)
    loops = [_from_collapsed(t, *st, cfg) for st in _scan(t.collapsed, max_p, k, min_len)]
    if b"0" * min_len in t.masked:
        loops += [_exact(t, *st, cfg) for st in _scan(t.raw, max_p, cfg.min_repeats, min_len)]
    else:
        st = _tail(t.raw, max_p, cfg.min_repeats, min_len)
        loops.append(_exact(t, *st, cfg) if st else None)
    return _with_drift(_merge([lp for lp in loops if lp]), text, cfg)


def _tail_loop_in(t: _Text, cfg: DetectConfig) -> Loop | None:
    """The qualifying loop that ends the text (exact first, then templated), or None."""
    max_p = _max_bytes(t, cfg)
    min_len = min(cfg.min_chars, cfg.min_chars_punct)
    st = _tail(t.raw, max_p, cfg.min_repeats, min_len)
    loop = _exact(t, *st, cfg) if st else None
    if loop is None and cfg.mask_digits and t.has_digits:
        st = _tail(t.collapsed, max_p, cfg.templated_min_repeats, min_len)
        loop = _from_collapsed(t, *st, cfg) if st else None
    return loop or _limit_tail(t, cfg)


def tail_loop(text: str, config: DetectConfig | None = None) -> Loop | None:
    """A loop that would make ``text`` degenerate if generation stopped now, or None.

    Meant for loop-aware early stopping (called on a growing text at every step): only the last
    ``tail_window`` characters are scanned, so a call costs O(window), whatever the text's length;
    a loop longer than the window is reported from the window's start. Counting loops are not
    returned unless ``counting_is_degenerate``.
    """
    cfg = config or DetectConfig()
    offset = max(0, len(text) - cfg.tail_window)
    loop = _tail_loop_in(_Text(text[offset:]), cfg)
    if loop is None or (loop.counting and not cfg.counting_is_degenerate):
        return None
    loop.start += offset
    loop.end += offset
    return loop


# ---------------------------------------------------------------- metrics and verdict


def _ngram_metrics(tokens: str | list[int], into: dict) -> None:
    """seq-rep-n = 1 - unique/total n-grams of one sequence (Welleck et al.); distinct-n = unique/total.
    The units are the token ids when given, else the text's words, CJK characters and punctuation
    marks (``_TOKEN``'s split, compiled: ``_fast.ngram_counts``)."""
    total, *distinct = _fast.ngram_counts(tokens)
    for n, count in enumerate(distinct, 1):
        share = count / (total - n + 1) if total - n + 1 > 0 else 1.0
        into[f"seq_rep_{n}"] = round(1.0 - share, 4)
        into[f"distinct_{n}"] = round(share, 4)


def compression_ratio(text: str) -> float:
    """Whisper's statistic: UTF-8 bytes over zlib-compressed bytes (level 6)."""
    raw = text.encode("utf-8", "surrogatepass")
    return round(len(raw) / len(zlib.compress(raw, 6)), 4) if raw else 0.0


def _is_degenerate(loops: list[Loop], n: int, finish_reason: str | None, cfg: DetectConfig) -> bool:
    """The verdict: a qualifying tail loop, and a finish reason that says it ran to the limit."""
    if finish_reason is not None and finish_reason not in LIMIT_REASONS:
        return False
    for loop in loops:
        if not loop.at_tail or (loop.counting and not cfg.counting_is_degenerate):
            continue
        if finish_reason is not None or loop.end == n:
            return True
    return False


def _ends_inside_unit(text: str, unit: str) -> bool:
    """The text stops in the middle of a word of the loop's unit, as a token limit cuts (a model that
    chose to stop ends on a whole word): its last word is the start of a word of the unit, not one."""
    if not text or not text[-1].isalnum():
        return False
    last = re.search(r"\w+$", text).group()
    words = set(re.findall(r"\w+", unit))
    return last not in words and any(w.startswith(last) for w in words)


def analyze(
    text: str,
    finish_reason: str | None = None,
    token_ids: list[int] | None = None,
    config: DetectConfig | None = None,
) -> DetectResult:
    """Loops, degeneration verdict and metrics of one candidate.

    ``finish_reason`` None means unknown: loops are reported, and the candidate is degenerate only
    if a tail loop runs to the very last character. A text whose finish reason says it stopped but
    which ends cut inside a loop (some servers report a limit hit as ``stop``) is degenerate, with a
    ``note`` saying the two disagree. ``token_ids``, when given, are the units of seq-rep-n and
    distinct-n; otherwise words, CJK characters and punctuation marks are.
    """
    cfg = config or DetectConfig()
    loops = find_loops(text, cfg)
    limit = finish_reason is None or finish_reason in LIMIT_REASONS
    if limit and not any(lp.at_tail for lp in loops) and (cut := _limit_tail(_Text(text), cfg)):
        loops.append(cut)
    tail = next((lp for lp in reversed(loops) if lp.at_tail), None)
    degenerate, note = _is_degenerate(loops, len(text), finish_reason, cfg), None
    if not limit and tail and not tail.counting and _ends_inside_unit(text, tail.unit):
        degenerate = True
        note = (f"finish_reason says {finish_reason!r}, but the text ends cut inside a loop: "
                f"a limit hit reported as {finish_reason!r}")
    metrics: dict = {"tail_loop_coverage": round((tail.end - tail.start) / len(text), 4) if tail else 0.0}
    if cfg.metrics:
        _ngram_metrics(list(token_ids) if token_ids is not None else text, metrics)
        metrics["compression_ratio"] = compression_ratio(text)
    return DetectResult(degenerate=degenerate, has_loop=bool(loops), loops=loops, finish_reason=finish_reason,
                        metrics=metrics, note=note)


def is_degenerate(text: str, finish_reason: str | None, config: DetectConfig | None = None) -> bool:
    """The verdict only (no metrics): the same answer as ``analyze``."""
    return analyze(text, finish_reason, config=replace(config or DetectConfig(), metrics=False)).degenerate


# ---------------------------------------------------------------- JSONL in, JSONL out


def _parse_line(line: str) -> tuple[str, str | None, list[int] | None, object]:
    """(text, finish_reason, token_ids, id) of one JSONL line; ValueError says what is wrong."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    text = row.get("text")
    if not isinstance(text, str):
        raise ValueError('"text" must be a string')
    finish = row.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise ValueError('"finish_reason" must be a string or null')
    token_ids = row.get("token_ids")
    if token_ids is not None and not (isinstance(token_ids, list) and all(isinstance(x, int) for x in token_ids)):
        raise ValueError('"token_ids" must be a list of integers')
    return text, finish, token_ids, row.get("id")


def _detect_batch(first: int, lines: list[str], config: DetectConfig | None) -> tuple[str, dict, list[str]]:
    """Output lines, counts and error messages of the input lines numbered from ``first``."""
    counts: dict = {"lines": 0, "degenerate": 0, "loops": 0, "errors": 0, "by_kind": {}}
    out, errors = [], []
    for number, line in enumerate(lines, first):
        if not line.strip():
            continue
        counts["lines"] += 1
        try:
            text, finish, token_ids, row_id = _parse_line(line)
        except ValueError as e:
            counts["errors"] += 1
            errors.append(f"line {number}: {e}")
            out.append(json.dumps({"line": number, "error": errors[-1]}, ensure_ascii=False))
            continue
        result = analyze(text, finish, token_ids, config)
        counts["degenerate"] += result.degenerate
        counts["loops"] += len(result.loops)
        if result.degenerate:  # which kind of loop made each verdict
            kind = next((lp.kind for lp in reversed(result.loops) if lp.at_tail), "cut")
            counts["by_kind"][kind] = counts["by_kind"].get(kind, 0) + 1
        out.append(json.dumps({"line": number, **({"id": row_id} if row_id is not None else {}), **result.to_dict()},
                              ensure_ascii=False))
    return "".join(x + "\n" for x in out), counts, errors


def _batches(lines: Iterable[str], max_bytes: int = 1 << 20) -> Iterable[tuple[int, list[str]]]:
    """(first line number, lines) in order, about ``max_bytes`` each."""
    batch: list[str] = []
    first = size = 0
    for number, line in enumerate(lines, 1):
        if not batch:
            first = number
        batch.append(line)
        size += len(line)
        if size >= max_bytes:
            yield first, batch
            batch, size = [], 0
    if batch:
        yield first, batch


def _in_order(pool, jobs: Iterable, depth: int) -> Iterable:
    """Results of ``jobs`` in order, with at most ``depth`` batches read ahead (a file of any size
    is never held whole, as ``Pool.imap`` would queue it)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(_detect_job, (job,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _detect_job(job: tuple[int, list[str], DetectConfig | None]) -> tuple[str, dict, list[str]]:
    return _detect_batch(*job)


def detect_jsonl(
    lines: Iterable[str],
    out: TextIO,
    *,
    err: TextIO | None = None,
    stats: dict | None = None,
    config: DetectConfig | None = None,
    workers: int = 1,
) -> int:
    """Analyze JSONL lines ``{"id"?, "text", "finish_reason"?, "token_ids"?}`` and write one JSON
    line per input line, in order. A malformed line gets ``{"line", "error"}`` (also on ``err``)
    and the rest are still processed. Returns the number of malformed lines; ``stats``, when given,
    receives the counts of lines, degenerate candidates (and by the kind of loop), loops and errors.
    ``workers`` > 1 analyzes batches of about 1 MB in that many processes; the output is the same,
    in the same order (an input of one batch is analyzed here, without starting any).
    """
    counts: dict = {"lines": 0, "degenerate": 0, "loops": 0, "errors": 0, "by_kind": {}}
    batches = iter(_batches(lines))
    head = list(islice(batches, 2))
    jobs = ((first, batch, config) for first, batch in (*head, *batches))
    pool = None
    if workers > 1 and len(head) > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(workers)  # the detector holds no threads or files
        results = _in_order(pool, jobs, 2 * workers)
    else:
        results = map(_detect_job, jobs)
    try:
        for text, part, errors in results:
            out.write(text)
            for message in errors if err is not None else ():
                print(f"error: {message}", file=err)
            for key in ("lines", "degenerate", "loops", "errors"):
                counts[key] += part[key]
            for kind, n in part["by_kind"].items():
                counts["by_kind"][kind] = counts["by_kind"].get(kind, 0) + n
    finally:
        if pool is not None:
            pool.terminate()
    if stats is not None:
        stats.update(counts)
    return counts["errors"]
