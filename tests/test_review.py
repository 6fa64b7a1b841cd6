"""Review decisions on a real store: overrides, the audit log, undo, two reviewers, queue leases, bulk, agreement."""

import json
import threading

import pytest

from core.present.diff import diff_html
from core.review.agreement import agreement, bulk, progress, send_to_second_review
from core.review.browse import candidates_frame
from core.review.decisions import Conflict, audit_log, decide, last_decided_pair
from core.review.queue import QueueFilter, next_pair, pair_view
from core.store import WorkspaceError
from tests.review_data import add_review_run


@pytest.fixture
def rws(demo_ws):
    """4 items → 8 pending pairs (per item: good vs loop, good vs middling)."""
    pairs = add_review_run(demo_ws, 4)
    assert len(pairs) == 8
    return demo_ws, pairs


def state(ws, pid):
    return pair_view(ws, pid)


def n_rows(ws, table, pid=None):
    sql = f"SELECT count(*) FROM {table}" + (" WHERE pair_id = ?" if pid else "")
    return ws.cursor().execute(sql, [pid] if pid else []).fetchone()[0]


def test_approve_is_a_decision_not_an_override(rws):
    ws, pairs = rws
    after = decide(ws, pairs[0], "approve", "ana", 0)
    assert after["status"] == "approved" and after["version"] == 1
    v = state(ws, pairs[0])
    assert v["status"] == "approved" and v["version"] == 1 and v["updated_by"] == "ana"
    d = ws.cursor().execute("SELECT reviewer, action, before, after FROM decisions").fetchall()
    assert [(r, a) for r, a, *_ in d] == [("ana", "approve")]
    assert json.loads(d[0][2])["status"] == "pending" and json.loads(d[0][3])["status"] == "approved"
    assert n_rows(ws, "audit_log") == 0


def test_swap_reject_pick_and_edit_are_audited_overrides(rws):
    ws, pairs = rws
    v = state(ws, pairs[0])
    chosen, rejected = v["chosen_candidate_id"], v["rejected_candidate_id"]
    after = decide(ws, pairs[0], "swap", "ana", 0)
    assert (after["chosen_candidate_id"], after["rejected_candidate_id"], after["status"]) == (rejected, chosen, "approved")
    assert state(ws, pairs[0])["chosen_text"] == v["rejected_text"]

    decide(ws, pairs[1], "reject", "ana", 0)
    assert state(ws, pairs[1])["status"] == "rejected"

    v2 = state(ws, pairs[2])
    other = next(c["candidate_id"] for c in v2["candidates"] if c["candidate_id"] not in (v2["chosen_candidate_id"], v2["rejected_candidate_id"]))
    after = decide(ws, pairs[2], "pick_rejected", "bo", 0, rejected_candidate_id=other)
    assert after["rejected_candidate_id"] == other and after["status"] == "pending"  # still open: approve next
    after = decide(ws, pairs[2], "edit_chosen", "bo", 1, chosen_text=' {"ok": "fixed"}')
    assert after["chosen_candidate_id"] is None and state(ws, pairs[2])["chosen_text"] == ' {"ok": "fixed"}'
    decide(ws, pairs[2], "approve", "bo", 2)

    kinds = sorted(a["kind"] for a in audit_log(ws))
    assert kinds == ["edit_chosen", "pick_rejected", "reject", "swap"]
    swap = audit_log(ws, pairs[0])[0]
    assert swap["before"]["chosen_candidate_id"] == chosen and swap["after"]["chosen_candidate_id"] == rejected


def test_pick_refuses_a_candidate_of_another_item_or_the_other_side(rws):
    ws, pairs = rws
    foreign = state(ws, pairs[-1])["chosen_candidate_id"]
    with pytest.raises(WorkspaceError, match="not a candidate"):
        decide(ws, pairs[0], "pick_chosen", "ana", 0, chosen_candidate_id=foreign)
    with pytest.raises(WorkspaceError, match="same candidate"):
        decide(ws, pairs[0], "pick_chosen", "ana", 0, chosen_candidate_id=state(ws, pairs[0])["rejected_candidate_id"])
    with pytest.raises(WorkspaceError, match="empty"):
        decide(ws, pairs[0], "edit_chosen", "ana", 0, chosen_text="  ")
    assert state(ws, pairs[0])["version"] == 0 and n_rows(ws, "decisions") == 0


def test_second_reviewer_with_a_stale_version_gets_a_conflict_not_an_overwrite(rws):
    ws, pairs = rws
    decide(ws, pairs[0], "swap", "ana", 0)
    with pytest.raises(Conflict) as e:
        decide(ws, pairs[0], "approve", "bo", 0)  # bo still sees version 0
    assert e.value.current["version"] == 1 and e.value.last["reviewer"] == "ana" and e.value.last["action"] == "swap"
    assert state(ws, pairs[0])["updated_by"] == "ana"
    decide(ws, pairs[0], "reject", "bo", e.value.current["version"])  # bo saw the change and chose
    assert state(ws, pairs[0])["status"] == "rejected"


def test_concurrent_decisions_on_one_pair_let_exactly_one_win(rws):
    ws, pairs = rws
    results = []
    barrier = threading.Barrier(2)

    def go(who, action):
        barrier.wait()
        try:
            decide(ws, pairs[0], action, who, 0)
            results.append(who)
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=go, args=("ana", "approve")), threading.Thread(target=go, args=("bo", "reject"))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results).count("conflict") == 1
    winner = next(r for r in results if r != "conflict")
    assert state(ws, pairs[0])["updated_by"] == winner and state(ws, pairs[0])["version"] == 1
    assert n_rows(ws, "decisions") == 1


def test_undo_restores_the_state_and_appends_to_the_log(rws):
    ws, pairs = rws
    before = state(ws, pairs[0])
    decide(ws, pairs[0], "swap", "ana", 0)
    assert last_decided_pair(ws, "ana") == pairs[0]
    after = decide(ws, pairs[0], "undo", "ana", 1)
    v = state(ws, pairs[0])
    assert after["version"] == 2 and v["status"] == "pending"
    assert (v["chosen_candidate_id"], v["rejected_candidate_id"]) == (before["chosen_candidate_id"], before["rejected_candidate_id"])
    assert [a["kind"] for a in audit_log(ws)] == ["undo", "swap"]  # append-only: the swap is still there
    assert last_decided_pair(ws, "ana") is None
    with pytest.raises(WorkspaceError, match="nothing"):
        decide(ws, pairs[0], "undo", "ana", 2)
    # Undo of a decision someone changed since is a conflict, not a silent overwrite.
    decide(ws, pairs[1], "approve", "ana", 0)
    decide(ws, pairs[1], "reject", "bo", 1)
    with pytest.raises(Conflict):
        decide(ws, pairs[1], "undo", "ana", 2)


def test_queue_hands_different_pairs_to_concurrent_reviewers(rws):
    ws, pairs = rws
    q = QueueFilter(run="rs")
    a, b = next_pair(ws, q, "ana"), next_pair(ws, q, "bo")
    assert a and b and a != b
    assert next_pair(ws, q, "ana") == a  # a reload shows the same pair
    decide(ws, a, "approve", "ana", 0)
    a2 = next_pair(ws, q, "ana")
    assert a2 not in (a, b)
    # An expired lease is handed out again.
    assert next_pair(ws, q, "cy", lease_s=-1) in pairs


def test_skip_moves_the_pair_to_the_end_of_my_queue(rws):
    ws, pairs = rws
    q = QueueFilter(run="rs")
    first = next_pair(ws, q, "ana")
    decide(ws, first, "skip", "ana", 0)
    assert state(ws, first)["status"] == "pending" and state(ws, first)["version"] == 0
    assert next_pair(ws, q, "ana") != first


def test_queue_filters(rws):
    ws, pairs = rws
    deg = ws.cursor().execute("SELECT count(*) FROM pairs WHERE json_extract_string(provenance, '$.rejected_because') = 'degenerate'").fetchone()[0]
    assert deg == 4
    got = set()
    for _ in range(10):
        p = next_pair(ws, QueueFilter(run="rs", degenerate_only=True), "f")
        if p is None or p in got:
            break
        got.add(p)
        decide(ws, p, "skip", "f", 0)
    assert len(got) == 4 and all(state(ws, p)["rejected"]["degenerate"] for p in got)
    close = next_pair(ws, QueueFilter(run="rs", close_calls=True, max_margin=0.25), "g")
    assert close and not state(ws, close)["rejected"]["degenerate"]  # 0.9 vs 0.7
    assert next_pair(ws, QueueFilter(run="rs", family="qwen"), "g") is None
    assert next_pair(ws, QueueFilter(run="rs", family="llama", stage="sft"), "g") is not None
    decide(ws, pairs[3], "swap", "h", 0)
    assert next_pair(ws, QueueFilter(run="rs", status="any", overridden=True), "h") == pairs[3]
    assert next_pair(ws, QueueFilter(run="rs", status="approved", reviewer="h"), "h") == pairs[3]
    assert QueueFilter.parse(["degenerate_only=true", "max_margin=0.2", "family=llama"]).max_margin == 0.2
    with pytest.raises(WorkspaceError):
        QueueFilter.parse(["nope=1"])


def test_bulk_approve_matches_the_filter_and_is_audited_per_pair(rws):
    ws, pairs = rws
    decide(ws, pairs[0], "reject", "ana", 0)
    out = bulk(ws, QueueFilter(run="rs", degenerate_only=True), "approve", "lead")
    assert out["decided"] == out["matched"] == 3  # 4 degenerate pairs, one already decided
    out = bulk(ws, QueueFilter(run="rs"), "reject", "lead")
    assert out["decided"] == 4
    p = progress(ws, "rs")
    assert (p["total"], p["left"], p["approved"], p["rejected"]) == (8, 0, 3, 5)
    assert p["per_reviewer"] == {"lead": 7, "ana": 1}
    assert sorted(a["kind"] for a in audit_log(ws)) == ["bulk_reject"] * 4 + ["reject"]


def test_run_choices_put_work_left_first_and_a_judging_run_names_its_pairs(rws):
    from core.review.queue import pair_runs
    from core.store.runs import pairs_run

    ws, pairs = rws
    add_review_run(ws, 1, run="newer", judge_run="newer-j")
    assert list(pair_runs(ws)) == ["newer", "rs"] and pair_runs(ws)["rs"] == 8
    assert bulk(ws, QueueFilter(run="newer"), "approve", "lead")["decided"] == 2
    assert pair_runs(ws) == {"rs": 8, "newer": 0}  # a finished run goes after the one with pending pairs
    assert pairs_run(ws, "rj") == "rs" and pairs_run(ws, "rs") == "rs" and pairs_run(ws, None) is None


def test_agreement_per_run_criterion_and_between_reviewers(rws):
    ws, pairs = rws
    assert send_to_second_review(ws, "rs", 1.0) == 8
    decide(ws, pairs[0], "approve", "ana", 0)
    decide(ws, pairs[1], "swap", "ana", 0)
    decide(ws, pairs[2], "reject", "ana", 0)
    # bo is handed the decided pairs for a second look; his decisions are records, not changes.
    second = next_pair(ws, QueueFilter(run="rs"), "bo")
    assert second == pairs[0]
    decide(ws, pairs[0], "approve", "bo", 1)
    decide(ws, pairs[1], "approve", "bo", 1)
    assert state(ws, pairs[1])["updated_by"] == "ana"
    a = agreement(ws, "rs")
    assert a["decided"] == 3 and a["overridden"] == 2 and a["outcomes"] == {"as_proposed": 1, "swapped": 1, "rejected": 1}
    assert a["reviewed_twice"] == 2 and a["reviewer_agreement"] == 0.5
    # The swapped pair's human chosen is the judge's worse one on fidelity; format ties there (1.0 = 1.0) and is left out.
    assert a["per_criterion"]["fidelity"] == {"pairs": 2, "judge_agrees": 0.5}
    assert a["per_criterion"]["format"] == {"pairs": 1, "judge_agrees": 1.0}


def test_candidate_browser_and_diff_are_escaped(rws):
    ws, _ = rws
    df = candidates_frame(ws, "rs", has_loop=True)
    assert len(df) == 4 and df["finish_reason"].eq("length").all() and df["model"].eq("tiny-sft").all()
    assert len(candidates_frame(ws, "rs", score=(0.8, 1.0))) == 4
    html = diff_html('<script>alert(1)</script> a b', "a <b> c")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    assert "only the first" in diff_html("x" * 100_000, "y", max_chars=1000)


def test_cli_bulk_approve_then_export(demo_ws, tmp_path):
    """`loopbreak review --approve-all` and `loopbreak export` as real subprocesses."""
    import subprocess
    import sys

    add_review_run(demo_ws, 3)
    demo_ws.close()  # the CLI is the single writer now
    run = lambda *a: subprocess.run([sys.executable, "-m", "core", *a, "-w", str(demo_ws.root), "--json"],  # noqa: E731
                                    capture_output=True, text=True)
    out = run("review", "--run", "rs", "--approve-all", "--filter", "degenerate_only=true", "--reviewer", "lead")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["decided"] == 3 and s["progress"]["approved"] == 3 and s["progress"]["left"] == 3
    out = run("review", "--run", "rs", "--approve-all")
    assert out.returncode == 1 and "--reviewer" in out.stderr
    out = run("export", "--run", "rs", "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"))
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["pairs"] == 3 and s["rejected_cut_at_limit"] == 3
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").open()]
    assert {r["reviewer"] for r in lines} == {"lead"} and all(r["rejected_cut_at_limit"] for r in lines)
    out = run("review", "--run", "rs")
    assert json.loads(out.stdout.strip().splitlines()[-1])["agreement"]["decided"] == 3


def test_a_version_3_workspace_with_pairs_migrates_and_can_be_reviewed(tmp_path):
    import duckdb

    from core.store import open_workspace
    from core.store.schema import SCHEMA_VERSION, migrate, schema_version

    (tmp_path / "ws").mkdir()
    con = duckdb.connect(str(tmp_path / "ws" / "loopbreak.duckdb"))
    migrate(con, target=3)
    con.execute("INSERT INTO pairs (pair_id, run_id, dataset, item_id, chosen_text, rejected_text) VALUES ('p', 'r', 'd', 'i', 'c', 'x')")
    con.close()
    ws = open_workspace(tmp_path / "ws")
    try:
        assert schema_version(ws.cursor()) == SCHEMA_VERSION >= 4
        assert ws.cursor().execute("SELECT second_review, claimed_by FROM pairs").fetchall() == [(False, None)]
        assert next_pair(ws, QueueFilter(), "ana") == "p"
        decide(ws, "p", "approve", "ana", 0)
        assert ws.cursor().execute("SELECT round FROM decisions").fetchall() == [(1,)]
    finally:
        ws.close()
