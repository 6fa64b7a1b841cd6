"""Pair mining: the policy on hand-made items, then end to end through a real store."""

import json

import pytest

from core.pairs import ALL_DEGENERATE, BELOW_FLOOR, NO_GAP, NO_JUDGMENT, Candidate, PairPolicy, mine_item, mine_run
from core.store import now

P = PairPolicy(min_chosen=0.6, min_margin=0.1, max_pairs_per_item=2)


def c(cid, overall, degenerate=False):
    return Candidate(cid, f"text {cid}", overall, degenerate, "length" if degenerate else "stop")


def test_degenerate_rejected_comes_first():
    pairs, reason = mine_item("i", [c("a", 0.9), c("b", 0.85), c("d", 0.7, True)], P)
    assert reason is None and [(p.chosen.candidate_id, p.rejected.candidate_id, p.reason) for p in pairs] == [("a", "d", "degenerate")]


def test_margin_rejected_when_nothing_looped():
    pairs, _ = mine_item("i", [c("a", 0.9), c("b", 0.75), c("e", 0.85)], P)
    assert [(p.rejected.candidate_id, p.reason) for p in pairs] == [("b", "margin")]


def test_ties_and_small_gaps_give_no_pair():
    assert mine_item("i", [c("a", 0.8), c("b", 0.8), c("e", 0.75)], P) == ([], NO_GAP)


def test_all_degenerate_and_below_floor():
    assert mine_item("i", [c("a", 0.3, True), c("b", 0.2, True)], P) == ([], ALL_DEGENERATE)
    assert mine_item("i", [c("a", 0.5), c("b", 0.2, True)], P) == ([], BELOW_FLOOR)
    assert mine_item("i", [c("a", None)], P) == ([], NO_JUDGMENT)


def test_reference_as_chosen_when_allowed():
    pol = PairPolicy(reference_as_chosen=True)
    pairs, reason = mine_item("i", [c("a", 0.3, True)], pol, reference='{"k":1}')
    assert reason is None and pairs[0].chosen is None and pairs[0].chosen_text == '{"k":1}'


def test_several_pairs_per_item_up_to_the_limit():
    cands = [c("a", 0.95), c("d1", 0.5, True), c("d2", 0.1, True), c("d3", 0.4, True), c("w", 0.6)]
    pairs, _ = mine_item("i", cands, P)
    assert [p.rejected.candidate_id for p in pairs] == ["d2", "d3"]  # degenerate first, worst first, limit 2
    pairs, _ = mine_item("i", cands, PairPolicy(max_pairs_per_item=10))
    assert [p.rejected.candidate_id for p in pairs] == ["d2", "d3", "d1", "w"]
    pairs, _ = mine_item("i", cands, PairPolicy(max_pairs_per_item=10, degenerate_only=True))
    assert all(p.reason == "degenerate" for p in pairs)


def test_a_degenerate_candidate_is_never_chosen():
    pairs, _ = mine_item("i", [c("d", 0.99, True), c("a", 0.7)], P)
    assert pairs[0].chosen.candidate_id == "a" and pairs[0].rejected.candidate_id == "d"


@pytest.fixture
def judged_ws(demo_ws):
    """A sampling run and a judging run over 3 demo items, written as the jobs' shards would be."""
    cur = demo_ws.cursor()
    items = [r[0] for r in cur.execute("SELECT item_id FROM items WHERE split = 'train' ORDER BY 1 LIMIT 3").fetchall()]
    cur.execute("INSERT INTO runs (run_id, kind, status, created_at) VALUES ('s1', 'sample', 'done', ?)", [now()])
    cur.execute("INSERT INTO runs (run_id, kind, status, config, created_at) VALUES ('j1', 'judge', 'done', ?, ?)",
                [json.dumps({"source_run": "s1"}), now()])
    table = {items[0]: [(0.9, False), (0.4, True)], items[1]: [(0.8, False), (0.8, False)], items[2]: [(0.2, True), (0.1, True)]}
    for item, cands in table.items():
        for k, (overall, degenerate) in enumerate(cands):
            cid = f"s1:{item}:{k}"
            cur.execute(
                "INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, prompt, text, finish_reason, degenerate, has_loop) "
                "VALUES (?, 's1', 'demo', ?, ?, 'P JSON:', ?, ?, ?, ?)",
                [cid, item, k, f"out {k}", "length" if degenerate else "stop", degenerate, degenerate],
            )
            cur.execute("INSERT INTO judgments (judgment_id, run_id, candidate_id, judge, scores, overall) VALUES (?, 'j1', ?, 'reference', '{}', ?)",
                        [f"j1:{cid}", cid, overall])
    return demo_ws, items


def test_mine_run_preview_write_and_idempotence(judged_ws):
    ws, items = judged_ws
    preview = mine_run(ws, "j1", P, write=False)
    assert preview["pairs"] == 1 and preview["new"] == 0 and ws.cursor().execute("SELECT count(*) FROM pairs").fetchone()[0] == 0
    assert preview["no_pair"] == {NO_GAP: 1, ALL_DEGENERATE: 1} and preview["rejected_degenerate"] == 1
    s = mine_run(ws, "j1", P)
    assert s["new"] == 1
    row = ws.cursor().execute("SELECT status, chosen_text, rejected_text, prompt, provenance, run_id FROM pairs").fetchone()
    assert row[:4] == ("pending", "out 0", "out 1", "P JSON:") and row[5] == "s1"
    prov = json.loads(row[4])
    assert prov["rejected_because"] == "degenerate" and prov["judge_run"] == "j1" and prov["policy"]["min_chosen"] == 0.6
    # a reviewed pair is never overwritten by mining again
    ws.cursor().execute("UPDATE pairs SET status = 'approved'")
    assert mine_run(ws, "j1", P)["new"] == 0
    assert ws.cursor().execute("SELECT status FROM pairs").fetchone()[0] == "approved"
