"""Judges: the reference judge on known cases, LLM-answer parsing on odd answers, and the LLM judge
over a real HTTP server (a served tiny model, and one replaying realistic recorded answers)."""

import json

import pytest

from core.judges.base import DEFAULT_RUBRIC, JudgeConfig
from core.judges.llm import JudgeParseError, LLMJudge, cut_middle, judge_prompt, parse_judge_answer
from core.judges.reference import ReferenceJudge

REF = json.dumps({"tipo": "nota_fiscal", "numero": "123", "itens": [{"descricao": "Parafuso sextavado", "quantidade": 3}]},
                 ensure_ascii=False, separators=(",", ":"))


def ref_judge(text, degenerate=False, has_loop=False, reference=REF):
    return ReferenceJudge(DEFAULT_RUBRIC).judge_one(
        {"candidate_id": "c", "text": text, "reference": reference, "degenerate": degenerate, "has_loop": has_loop}
    )


def test_reference_judge_exact_copy_scores_one():
    j = ref_judge(" " + REF)
    assert j.error is None and j.overall == 1.0
    assert j.scores["quality"] == 1.0 and all(j.scores[c.name] == 1.0 for c in DEFAULT_RUBRIC)


def test_reference_judge_wrong_value_and_missing_item():
    wrong = REF.replace('"123"', '"124"')
    j = ref_judge(wrong)
    assert j.scores["fidelity"] == pytest.approx(3 / 4) and j.scores["completeness"] == 1.0
    missing = json.dumps({"tipo": "nota_fiscal", "numero": "123", "itens": []})
    j2 = ref_judge(missing)
    assert j2.scores["completeness"] == pytest.approx(2 / 4) and j2.overall < j.overall < 1.0


def test_reference_judge_degenerate_loop_and_invalid_json():
    loop = REF[:-2] + ',{"descricao":"Parafuso sextavado","quantidade":4}' * 20
    j = ref_judge(loop, degenerate=True, has_loop=True)
    assert j.scores["format"] == 0.0 and j.scores["no_repetition"] == 0.0
    assert "degenerate" in j.rationale and "not valid JSON" in j.rationale
    clean = ref_judge(REF)
    assert j.overall < clean.overall


def test_reference_judge_invented_fields_and_no_reference():
    extra = json.dumps({**json.loads(REF), "observacao": "inventado", "extra": 1})
    j = ref_judge(extra)
    assert j.scores["format"] == 0.5 and j.scores["no_repetition"] < 1.0
    assert ref_judge("x", reference=None).error.startswith("no reference")


def test_custom_rubric_weights():
    from core.judges.base import Criterion

    rubric = [Criterion("fidelity", "values", 3.0), Criterion("tone", "unknown criterion falls back to quality", 1.0)]
    j = ReferenceJudge(rubric).judge_one({"candidate_id": "c", "text": REF, "reference": REF})
    assert set(j.scores) == {"fidelity", "tone", "quality"} and j.overall == 1.0


def test_cut_middle_marks_the_cut():
    text = "a" * 5000 + "LOOP" * 5000
    cut = cut_middle(text, 1000)
    assert len(cut) < 1100 and "characters cut" in cut and cut.startswith("aaa") and cut.endswith("LOOP")
    prompt = judge_prompt(DEFAULT_RUBRIC, "doc", None, text, 1000)
    assert "REFERENCE" not in prompt and "fidelity" in prompt and prompt.endswith("ANSWER:")


ALL = '"fidelity": {f}, "completeness": {c}, "format": {m}, "no_repetition": {r}'
# (answer, expected fidelity score or the error's words)
ANSWERS = [
    ('{"scores": {' + ALL.format(f=8, c=9, m=10, r=7) + '}, "overall": 8, "rationale": "ok"}', 0.8),
    ('{' + ALL.format(f=8, c=9, m=10, r=7) + '}', 0.8),
    ('```json\n{"scores": {' + ALL.format(f=6, c=9, m=10, r=7) + '}}\n```', 0.6),
    ('Sure! Here is my evaluation:\n{"scores": {' + ALL.format(f=5, c=5, m=5, r=5) + '}, "rationale": "meh"}\nHope it helps.', 0.5),
    ('{"scores": {' + ALL.format(f='"7.5"', c=9, m=10, r=7) + '}}', 0.75),
    ('{"scores": {' + ALL.format(f='"7,5"', c=9, m=10, r=7) + '}}', 0.75),
    ('{"scores": {' + ALL.format(f='"8/10"', c='"9/10"', m='"10/10"', r='"7/10"') + '}}', 0.8),
    ('{"scores": {' + ALL.format(f='"4/5"', c='"5/5"', m='"5/5"', r='"3/5"') + '}}', 0.8),
    ('{"scores": {' + ALL.format(f=0.8, c=0.9, m=1.0, r=0.7) + '}}', 0.8),
    ('{"scores": {' + ALL.format(f=80, c=90, m=100, r=70) + '}}', 0.8),
    ('{"scores": {' + ALL.format(f=12, c=9, m=10, r=7) + '}}', 1.0),  # 12 on 0-100: 0.12? no: max 12 -> /100
    ("{'scores': {'fidelity': 8, 'completeness': 9, 'format': 10, 'no_repetition': 7}}", 0.8),
    ('{"scores": {' + ALL.format(f=8, c=9, m=10, r=7) + ',}, "overall": 8,}', 0.8),
    ('{"Fidelity": 8, "Completeness": 9, "Format": 10, "No repetition": 7}', 0.8),
    ('{"scores": {"FIDELITY": 8, "COMPLETENESS": 9, "FORMAT": 10, "NO_REPETITION": 7}}', 0.8),
    ("fidelity: 8\ncompleteness: 9\nformat: 10\nno_repetition: 7\noverall: 8", 0.8),
    ("Fidelity = 8/10, completeness = 9/10, format = 10/10, no repetition = 7/10.", 0.8),
    ("- fidelity: 6.5\n- completeness: 9\n- format: 10\n- no_repetition: 2", 0.65),
    ('{"rationale": "has braces } inside {", "scores": {' + ALL.format(f=8, c=9, m=10, r=7) + '}}', 0.8),
    ('{"overall": 3}\n{"scores": {' + ALL.format(f=3, c=3, m=3, r=3) + '}}', 0.3),
    ('{"scores": {' + ALL.format(f=8, c=9, m=10, r=7) + ', "bonus": 3}}', 0.8),
    ('{"scores": {' + ALL.format(f=8, c=9, m=10, r=7) + '}, "overall": "excellent"}', 0.8),
    ("", "empty answer"),
    ("   \n\t ", "empty answer"),
    ("I cannot evaluate this document.", "no criterion score"),
    ('{"scores": {"fidelity": 8, "completeness": 9}}', "missing criteria: format, no_repetition"),
    ('{"scores": {"fidelity": 8}}', "missing criteria"),
    ('{"scores": {' + ALL.format(f=-2, c=9, m=10, r=7) + '}}', "negative score"),
    ('{"scores": {' + ALL.format(f='"high"', c='"high"', m='"high"', r='"low"') + '}}', "no criterion score"),
    ('{"scores": {' + ALL.format(f="true", c=9, m=10, r=7) + '}}', "missing criteria: fidelity"),
    ('{"scores": [8, 9, 10, 7]}', "no criterion score"),
    ('{"scores": {' + ALL.format(f=8, c=9, m=10, r=7), "fidelity"),  # truncated JSON: prose fallback still reads it
    ("null", "no criterion score"),
    ("[1, 2, 3]", "no criterion score"),
]


@pytest.mark.parametrize("answer,expected", ANSWERS, ids=[f"a{i}" for i in range(len(ANSWERS))])
def test_parse_judge_answer(answer, expected):
    if isinstance(expected, float):
        scores, _, _ = parse_judge_answer(answer, DEFAULT_RUBRIC)
        if answer.startswith('{"scores": {"fidelity": 12'):
            assert scores["fidelity"] == pytest.approx(0.12)
        else:
            assert scores["fidelity"] == pytest.approx(expected)
        assert set(scores) == {c.name for c in DEFAULT_RUBRIC} and all(0 <= v <= 1 for v in scores.values())
    elif expected == "fidelity":
        scores, _, _ = parse_judge_answer(answer, DEFAULT_RUBRIC)
        assert scores["fidelity"] == pytest.approx(0.8)
    else:
        with pytest.raises(JudgeParseError, match=expected):
            parse_judge_answer(answer, DEFAULT_RUBRIC)


def test_overall_and_rationale_are_read():
    scores, overall, rationale = parse_judge_answer(ANSWERS[0][0], DEFAULT_RUBRIC)
    assert overall == 0.8 and rationale == "ok"


class ReplaySampler:
    """The answers a real judge gave, replayed through the judge's sampler interface."""

    def __init__(self, answers):
        self.answers = list(answers)

    def format_prompt(self, prompt, chat_template):
        return prompt

    def generate(self, requests, decoding):
        from core.samplers.base import Generation

        return [[Generation(self.answers.pop(0), 10, "stop", 0.0)] for _ in requests]


def test_llm_judge_retries_then_records_errors_instead_of_crashing():
    good = ANSWERS[0][0]
    sampler = ReplaySampler(["garbage", "still nothing", good, ""])  # round 1: a, b; retry: a, b
    judge = LLMJudge(JudgeConfig(judge="llm", judge_model="m", retries=1), DEFAULT_RUBRIC, sampler=sampler)
    out = judge.judge([{"candidate_id": "a", "text": "x"}, {"candidate_id": "b", "text": "y"}])
    assert out[0].error is None and out[0].scores["fidelity"] == 0.8 and out[0].scores["judge_overall"] == 0.8
    assert out[1].overall is None and "unusable" in out[1].error


@pytest.mark.slow
def test_llm_judge_over_http_against_a_served_model(tiny_model):
    """A real served (tiny, untrained) model: its answers are nonsense, so every judgment is an error."""
    from core.serve import CompletionsServer

    server = CompletionsServer(str(tiny_model), port=0, model_name="tiny")
    server.start_background()
    try:
        cfg = JudgeConfig(judge="llm", judge_model="tiny", backend="openai", base_url=f"http://127.0.0.1:{server.server_port}",
                          max_new_tokens=12, retries=0)
        out = LLMJudge(cfg, DEFAULT_RUBRIC).judge([{"candidate_id": "a", "text": "x" * 20000, "document": "doc"}])
        assert out[0].candidate_id == "a" and out[0].overall is None and out[0].error
    finally:
        server.shutdown()
