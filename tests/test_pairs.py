"""Pair mining: the policy on hand-made items, then end to end through a real store."""

import json

import pytest

from core.policy.mining import ALL_DEGENERATE, BELOW_FLOOR, NO_GAP, NO_JUDGMENT, Candidate, PairPolicy, mine_item
from core.steps.pairs import mine_run

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


@pytest.mark.slow
def test_cli_sample_judge_pairs_flow(tmp_path, tiny_model):
    """The whole flow through the real CLI: sample, judge (reference), mine pairs."""
    import subprocess
    import sys

    from core.store import open_workspace
    from tests.conftest import fill_demo

    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    w.close()

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "core", *args, "-w", str(w.root), "--json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    s = cli("sample", "--model", str(tiny_model), "--dataset", "demo", "--split", "train", "--n", "3",
            "--max-new-tokens", "24", "--limit", "3")
    j = cli("judge", "--run", s["run_id"])
    assert j["judged"] == 12 and j["errors"] == 0 and set(j["criteria"]) >= {"fidelity", "format", "quality"}
    p = cli("pairs", "--run", s["run_id"], "--min-chosen", "0", "--min-margin", "0.0001")
    assert p["judge_run"] == j["run_id"] and p["items"] == 3
    assert p["pairs"] + sum(p["no_pair"].values()) >= 3 and p["new"] == p["pairs"]


def test_chosen_must_have_stopped_by_itself():
    """A clean candidate cut at the limit is an unfinished transcription: never chosen by default."""
    from core.policy.mining import UNFINISHED

    cut = Candidate("a", "text a", 0.9, False, "length")
    pairs, reason = mine_item("i", [cut, c("b", 0.7), c("d", 0.2, True)], P)
    assert reason is None and [(p.chosen.candidate_id, p.rejected.candidate_id) for p in pairs] == [("b", "d")]
    assert mine_item("i", [cut, c("d", 0.2, True)], P) == ([], UNFINISHED)
    # the policy can allow it, and a finished one below the floor is still "below the floor"
    loose = PairPolicy(min_chosen=0.6, chosen_must_finish=False)
    assert mine_item("i", [cut, c("d", 0.2, True)], loose)[0][0].chosen.candidate_id == "a"
    assert mine_item("i", [c("b", 0.5), c("d", 0.2, True)], P) == ([], BELOW_FLOOR)
