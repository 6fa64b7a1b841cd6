"""The attractor view: teacher-forced token probabilities, loop spans on tokens, the figure, the model lookup."""

import json

import pytest

from core.policy.detect import analyze
from core.policy.prompts import build_prompt
from core.present.charts import attractor_figure
from core.steps.attractor import AttractorError, _score, candidate_attractor, candidate_model, load_model, map_loops, reading, token_probabilities
from core.store import now
from core.store.models import register_model
from tests.attractor_data import add_loop_candidate, demo_loop

PROMPT = build_prompt("NOTA FISCAL 123 Emitente: Ferragens Silva LTDA Itens: Borracha 1 x 1,58")
UNIT = '{"descricao":"Borracha pardo 10un","quantidade":1,"valor_unitario":"1,58"},'
LOOPED = ' {"tipo":"nota_fiscal","numero":"123","itens":[' + UNIT * 6 + UNIT[:30]


def check_tokens(result, completion):
    tokens = result["tokens"]
    assert tokens and result["n_tokens"] == len(tokens)
    assert all(0.0 <= t["p"] <= 1.0 and t["rank"] >= 1 and t["entropy"] >= -1e-6 for t in tokens)
    assert all(t["p_eos"] is None or 0.0 <= t["p_eos"] <= 1.0 for t in tokens)
    # offsets: contiguous, covering the completion exactly
    assert tokens[0]["start"] == 0 and tokens[-1]["end"] == len(completion)
    assert all(a["end"] == b["start"] for a, b in zip(tokens, tokens[1:]))
    assert "".join(completion[t["start"]:t["end"]] for t in tokens) == completion


def check_loop_mapping(result):
    tokens = result["tokens"]
    for lp in result["loops"]:
        i, j = lp["token_start"], lp["token_end"]
        assert 0 <= i < j <= len(tokens)
        assert tokens[i]["start"] <= lp["start"] < tokens[i]["end"]  # the first loop token holds the loop's first char
        assert tokens[j - 1]["start"] < lp["end"] <= tokens[j - 1]["end"]  # the last one its last char
        assert i == 0 or tokens[i - 1]["end"] <= lp["start"]
        assert j == len(tokens) or tokens[j]["start"] >= lp["end"]
        assert lp["mean_p"] == pytest.approx(sum(t["p"] for t in tokens[i:j]) / (j - i))
        assert i <= lp["first_repeat_token"] <= j and lp["per_repeat"]


def test_tiny_model_probabilities_offsets_and_loop_spans(tiny_model):
    loops = analyze(LOOPED, "length").loops
    assert loops and loops[0].period == len(UNIT)
    result = token_probabilities(str(tiny_model), PROMPT, LOOPED, loops=loops)
    check_tokens(result, LOOPED)
    check_loop_mapping(result)
    _, tok, _, _ = load_model(str(tiny_model))
    assert result["n_tokens"] == len(tok(LOOPED, add_special_tokens=False)["input_ids"])
    assert result["n_prompt_tokens"] == len(tok(PROMPT, add_special_tokens=False)["input_ids"])
    s = result["summary"]
    assert s["n_loop"] + s["n_outside"] == s["n_all"] == result["n_tokens"]
    assert s["n_before"] == result["loops"][0]["token_start"]
    assert result["windows"] == 1 and not result["notes"]
    # loops=None runs the detector itself; a second call reuses the cached model
    again = token_probabilities(str(tiny_model), PROMPT, LOOPED, finish_reason="length")
    assert [t["p"] for t in again["tokens"]] == [t["p"] for t in result["tokens"]]
    assert [(lp["token_start"], lp["token_end"]) for lp in again["loops"]] == [(lp["token_start"], lp["token_end"]) for lp in result["loops"]]


def test_multibyte_text_and_an_empty_prompt(tiny_model):
    text = " Ação: 5 × café — nº 7 ✓ 😀 fim"
    result = token_probabilities(str(tiny_model), "", text, loops=[])
    check_tokens(result, text)
    assert result["loops"] == [] and result["summary"]["mean_p_loop"] is None
    assert any("BOS" in n for n in result["notes"])
    assert reading(result).startswith("No loop")


def test_chunked_head_equals_the_plain_forward_and_sliding_windows(tiny_model):
    model, tok, device, _ = load_model(str(tiny_model))
    ids = tok(PROMPT + LOOPED, add_special_tokens=False)["input_ids"]
    start = len(tok(PROMPT, add_special_tokens=False)["input_ids"])
    split = _score(model, ids, start, None, 1, device, tok.eos_token_id, split=True, chunk=7)
    plain = _score(model, ids, start, None, 1, device, tok.eos_token_id, split=False)
    assert split["p"] == pytest.approx(plain["p"], abs=1e-5)
    assert split["rank"] == plain["rank"]

    full = token_probabilities(str(tiny_model), PROMPT, LOOPED, loops=[])
    context = full["n_prompt_tokens"] + 60
    assert full["n_tokens"] > 200
    window = token_probabilities(str(tiny_model), PROMPT, LOOPED, loops=[], context=context, stride=32)
    check_tokens(window, LOOPED)
    assert window["windows"] > 2 and any("sliding windows" in n for n in window["notes"])
    first = 60  # tokens of the first window see exactly what the full pass sees
    assert [t["p"] for t in window["tokens"][:first]] == pytest.approx([t["p"] for t in full["tokens"][:first]], abs=1e-5)


def test_a_real_loop_of_the_demo_model_is_an_attractor(record_id="demo-validation-00031"):
    """The shipped llama SFT model's own greedy loops: scored under the exact prompt they came from,
    every token is the model's top choice, and the loop's tokens are likelier than the text before."""
    loop = demo_loop("llama", record_id)
    assert loop["degenerate"] and loop["loops"]
    result = token_probabilities(loop["model_path"], loop["prompt"], loop["text"], loops=loop["loops"])
    check_tokens(result, loop["text"])
    check_loop_mapping(result)
    assert result["n_tokens"] == loop["n_tokens"]  # re-tokenizing gives back as many tokens as were generated
    s = result["summary"]
    assert s["rank1_share"] >= 0.99  # a greedy output: the prompt is the one it was decoded from
    assert s["n_before"] > 50 and s["n_loop"] > 50
    assert s["mean_p_loop"] > s["mean_p_before"]
    assert s["mean_p_repeats"] > s["mean_p_before"]
    assert reading(result).startswith("Inside the loop the model gives its repeats p≈")


def test_figure_marks_the_loops_and_escapes_hover_text(tiny_model):
    text = LOOPED + ' <script>alert(1)</script> & <b>x</b>\n'
    loops = analyze(text, "length").loops
    result = token_probabilities(str(tiny_model), PROMPT, text, loops=loops)
    fig = attractor_figure(result)
    assert len(fig.layout.shapes) >= len(result["loops"]) >= 1
    assert any("loop 1" in a.text for a in fig.layout.annotations)
    points = [(x, y) for tr in fig.data if tr.mode == "markers" for x, y in zip(tr.x, tr.y)]
    assert len(points) == result["n_tokens"] and all(0 <= y <= 1 for _, y in points)
    labels = [c[0] for tr in fig.data if tr.mode == "markers" for c in tr.customdata]
    assert not any("<" in lab or ">" in lab for lab in labels)
    assert any("&lt;" in lab for lab in labels) and any("&amp;" in lab for lab in labels)
    assert any("⏎" in lab for lab in labels)
    # the loops may be given as the detector's character spans instead
    again = attractor_figure(result, [lp.to_dict() for lp in loops])
    assert [s.x0 for s in again.layout.shapes] == [s.x0 for s in fig.layout.shapes]
    assert map_loops(result["tokens"], loops)[0]["token_start"] == result["loops"][0]["token_start"]


def test_candidate_model_lookup_and_a_model_not_here(demo_ws, tiny_model):
    cur = demo_ws.cursor()
    item, text = cur.execute("SELECT item_id, text FROM items WHERE split = 'train' ORDER BY 1 LIMIT 1").fetchall()[0]
    register_model(cur, name="tiny", path=str(tiny_model), family="llama", stage="sft")
    for run_id, model, config in (
        ("s-local", "tiny", {"config": {"backend": "transformers", "instruction": "Transcreva."}, "model_path": str(tiny_model)}),
        ("s-remote", "acme/ocr-3b", {"config": {"backend": "openai"}, "model_path": "acme/ocr-3b"}),
    ):
        cur.execute("INSERT INTO runs (run_id, kind, model, config, status, created_at, backend, instruction, model_path) "
                    "VALUES (?, 'sample', ?, ?, 'done', ?, ?, ?, ?)",
                    [run_id, model, json.dumps(config), now(), config["config"]["backend"], config["config"].get("instruction"),
                     config["model_path"]])
    cand = {"candidate_id": "s-local:x:0", "run_id": "s-local", "dataset": "demo", "item_id": item, "prompt": None,
            "text": LOOPED, "finish_reason": "length", "loops": [lp.to_dict() for lp in analyze(LOOPED, "length").loops]}
    info = candidate_model(demo_ws, cand)
    assert info["local"] and info["path"] == str(tiny_model) and info["reason"] is None
    result = candidate_attractor(demo_ws, cand)  # no stored prompt: rebuilt from the item with the run's instruction
    assert result["model"] == "tiny" and any("rebuilt" in n for n in result["notes"])
    _, tok, _, _ = load_model(str(tiny_model))
    assert result["n_prompt_tokens"] == len(tok(build_prompt(text, "Transcreva."), add_special_tokens=False)["input_ids"])
    assert result["loops"] and result["loops"][0]["start"] == cand["loops"][0]["start"]

    remote = {**cand, "run_id": "s-remote", "backend": "openai", "prompt": "P"}
    info = candidate_model(demo_ws, remote)
    assert not info["local"] and "not on this machine" in info["reason"] and "openai" in info["reason"]
    with pytest.raises(AttractorError, match="not on this machine"):
        candidate_attractor(demo_ws, remote)
    gone = candidate_model(demo_ws, {**cand, "run_id": "nope"})
    assert not gone["local"] and "not in this workspace" in gone["reason"]


def test_a_stored_candidate_of_the_demo_model(ws):
    loop = demo_loop("llama", "demo-validation-00089")
    cid = add_loop_candidate(ws, loop)
    from core.store.candidates import get_candidate

    result = candidate_attractor(ws, get_candidate(ws, cid))
    assert result["model"] == "demo-llama-sft" and not result["notes"]
    check_tokens(result, loop["text"])
    check_loop_mapping(result)
    s = result["summary"]
    assert s["rank1_share"] >= 0.99 and s["mean_p_loop"] > s["mean_p_before"]
