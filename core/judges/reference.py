"""The reference judge: offline and deterministic, scored against the item's reference."""

from __future__ import annotations

import json

from core.judges.base import Criterion, Judgment, weighted
from core.policy.metrics import levenshtein_ratio, quality


def _leaves(obj, prefix: str = "") -> dict[str, str]:
    """Flatten JSON to path -> normalised value; list items are matched by position."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix: " ".join(str(obj).split()).casefold()}


def _parse_json(text: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


class ReferenceJudge:
    name = "reference"

    def __init__(self, rubric: list[Criterion]):
        self.rubric = rubric

    def judge_one(self, cand: dict) -> Judgment:
        ref = cand.get("reference")
        if not ref:
            return Judgment(cand["candidate_id"], {}, None, "", self.name, "no reference for this item: use the llm judge")
        text = cand["text"] or ""
        q = quality(text.strip(), ref.strip())
        ref_obj, out_obj = _parse_json(ref), _parse_json(text.strip())
        notes = []
        if ref_obj is not None and isinstance(out_obj, (dict, list)):
            want, got = _leaves(ref_obj), _leaves(out_obj)
            fidelity = sum(got.get(p) == v for p, v in want.items()) / max(1, len(want))
            completeness = sum(p in got for p in want) / max(1, len(want))
            invented = sum(p not in want for p in got) / max(1, len(got))
            same_keys = not isinstance(ref_obj, dict) or set(out_obj) == set(ref_obj) if isinstance(out_obj, dict) else False
            fmt = 1.0 if same_keys else 0.5
            notes.append(f"{sum(got.get(p) == v for p, v in want.items())}/{len(want)} fields exact")
            if invented:
                notes.append(f"{sum(p not in want for p in got)} fields not in the reference")
        else:
            fidelity = levenshtein_ratio(text, ref)
            completeness = min(1.0, len(text) / max(1, len(ref)))
            invented = 0.0
            fmt = 0.0 if ref_obj is not None else 1.0
            if ref_obj is not None:
                notes.append("not valid JSON")
        degenerate, has_loop = bool(cand.get("degenerate")), bool(cand.get("has_loop"))
        no_rep = 0.0 if degenerate else (0.5 if has_loop else 1.0)
        no_rep = max(0.0, no_rep - invented)
        if degenerate:
            notes.append("degenerate: a loop ran to the limit")
        elif has_loop:
            notes.append("a loop inside the output")
        by_name = {"fidelity": fidelity, "completeness": completeness, "format": fmt, "no_repetition": no_rep}
        scores = {c.name: round(by_name.get(c.name, q), 4) for c in self.rubric}
        scores["quality"] = round(q, 4)
        rationale = f"quality {q:.3f}; " + "; ".join(notes) if notes else f"quality {q:.3f}"
        return Judgment(cand["candidate_id"], scores, weighted(scores, self.rubric), rationale, self.name)

    def judge(self, batch: list[dict]) -> list[Judgment]:
        return [self.judge_one(c) for c in batch]
