"""Judges behind one interface (:class:`core.judges.base.Judge`), chosen by name.

* ``reference`` — offline and deterministic, the demo's default: the DharmaOCR quality score
  ((Levenshtein ratio + BLEU-4)/2 against the reference), field-level accuracy when the output is
  JSON, format validity, and the detector's verdict, mapped onto the rubric's criteria;
* ``llm`` — prompts any model through a sampler backend with the rubric, the document, the
  reference when there is one, and the candidate, then parses its answer robustly. An answer that
  cannot be read becomes a judgment with an ``error``, never an exception.

Scores are in [0, 1]; ``overall`` is the rubric-weighted mean of the criteria (an LLM's own overall,
when it gives one, is kept in ``scores['judge_overall']``).
"""

from __future__ import annotations

from core.judges.base import Judge, JudgeConfig, rubric_of


def _reference(cfg: JudgeConfig, rubric) -> Judge:
    from core.judges.reference import ReferenceJudge

    return ReferenceJudge(rubric)


def _llm(cfg: JudgeConfig, rubric) -> Judge:
    from core.judges.llm import LLMJudge

    return LLMJudge(cfg, rubric)


JUDGES = {"reference": _reference, "llm": _llm}


def make_judge(cfg: JudgeConfig) -> Judge:
    if cfg.judge not in JUDGES:
        raise ValueError(f"unknown judge {cfg.judge!r}: choose one of {', '.join(JUDGES)}")
    return JUDGES[cfg.judge](cfg, rubric_of(cfg))
