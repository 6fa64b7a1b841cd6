"""Pair mining: chosen = a judge-validated clean candidate, rejected = the model's own failure.

Per item (DESIGN.md, the seeds' decision): chosen is the best *non-degenerate* candidate whose
score clears a quality floor; rejected is a *degenerate* candidate first (the loops DPO must
unlearn), else a candidate worse than the chosen by at least a margin. Ties and items without a
clear gap yield no pair, and every item without a pair is counted under its reason, so the policy
can be read and tuned. One item may give several pairs (one chosen against several rejected), up to
a limit. The reference may stand in as chosen when no candidate qualifies (off by default: a
reference is not the model's own distribution).

The rule is pure (`mine_item`), so the policy is tested without a store; core.steps.pairs.mine_run
reads a judging run and writes pending pairs, unless asked only for the preview counts.

A chosen candidate must have stopped by itself (``chosen_must_finish``): one that ran to the token
limit without a loop is an unfinished transcription, and the EOS a trainer appends to chosen would
teach the model to stop mid-document.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import option


@dataclass
class PairPolicy:
    """How pairs are mined from judged candidates."""

    min_chosen: float = option(0.6, "quality floor: a chosen candidate's overall score must reach it")
    min_margin: float = option(0.1, "a non-degenerate rejected must score at least this much below the chosen")
    max_pairs_per_item: int = option(2, "most pairs one item may give (one chosen against several rejected)")
    reference_as_chosen: bool = option(False, "use the reference as chosen when no candidate clears the floor")
    degenerate_only: bool = option(False, "only degenerate candidates may be rejected (no margin-based pairs)")
    chosen_must_finish: bool = option(True, "a chosen candidate must have stopped by itself (finish_reason stop): one cut at the limit is an unfinished transcription, and the EOS appended to chosen would teach the model to stop mid-document")


# Why an item gave no pair.
NO_JUDGMENT = "no usable judgment"


ALL_DEGENERATE = "all candidates degenerate (no clean chosen)"


BELOW_FLOOR = "no clean candidate above the quality floor"


NO_GAP = "no degenerate candidate and no clear gap (ties)"


UNFINISHED = "no clean candidate that stopped by itself (the best ones hit the token limit)"


@dataclass
class Candidate:
    candidate_id: str
    text: str
    overall: float | None
    degenerate: bool
    finish_reason: str | None = None


@dataclass
class Pair:
    item_id: str
    chosen: Candidate | None  # None: the reference stands in
    rejected: Candidate
    chosen_text: str
    reason: str  # "degenerate" or "margin"


def mine_item(item_id: str, cands: list[Candidate], policy: PairPolicy, reference: str | None = None) -> tuple[list[Pair], str | None]:
    """The pairs of one item, or no pair and the reason."""
    judged = [c for c in cands if c.overall is not None]
    if not judged:
        return [], NO_JUDGMENT
    clean = sorted((c for c in judged if not c.degenerate), key=lambda c: (-c.overall, c.candidate_id))
    degenerate = sorted((c for c in cands if c.degenerate), key=lambda c: (c.overall if c.overall is not None else -1, c.candidate_id))
    eligible = [c for c in clean if c.finish_reason == "stop"] if policy.chosen_must_finish else clean
    chosen = eligible[0] if eligible and eligible[0].overall >= policy.min_chosen else None
    if chosen is None:
        if not (policy.reference_as_chosen and reference):
            if not clean:
                return [], ALL_DEGENERATE
            unfinished = any(c.overall >= policy.min_chosen for c in clean) and not any(
                c.overall >= policy.min_chosen for c in eligible)
            return [], UNFINISHED if unfinished else BELOW_FLOOR
        chosen_text = reference
    else:
        chosen_text = chosen.text
    rejected = [(c, "degenerate") for c in degenerate]
    if not policy.degenerate_only:
        top = chosen.overall if chosen else 1.0
        worse = sorted((c for c in clean if c is not chosen and c.overall <= top - policy.min_margin), key=lambda c: (c.overall, c.candidate_id))
        rejected += [(c, "margin") for c in worse]
    if not rejected:
        return [], NO_GAP
    pairs = [Pair(item_id, chosen, r, chosen_text, why) for r, why in rejected[: policy.max_pairs_per_item]]
    return pairs, None
