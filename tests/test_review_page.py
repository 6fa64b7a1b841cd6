"""The Review page under AppTest: a reviewer name is required, buttons decide, hostile model text stays inert."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.review_data import add_review_run

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def review(ws, reviewer=None):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["workspace_path"] = str(ws.root)
    if reviewer:
        at.session_state["reviewer"] = reviewer
    at.run()
    at.switch_page("views/review.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_pair(at) -> str:
    block = next(h.proto.body for h in at.get("html") if "lb-pair-id" in h.proto.body)
    return block.split("pair ", 1)[1].split(" · ")[0]


def test_asks_for_a_reviewer_name_first(demo_ws):
    at = review(demo_ws)
    assert "Reviewer" in at.info[0].value and not at.error


def test_a_button_decides_and_the_next_pair_follows(demo_ws):
    pairs = add_review_run(demo_ws, 2)
    at = review(demo_ws, "ana")
    assert shown_pair(at) == pairs[0]
    at.button[0].click().run()  # Approve (key A)
    assert not at.exception
    assert shown_pair(at) == pairs[1]
    row = demo_ws.cursor().execute("SELECT reviewer, action FROM decisions").fetchall()
    assert row == [("ana", "approve")]
    assert demo_ws.cursor().execute("SELECT status FROM pairs WHERE pair_id = ?", [pairs[0]]).fetchone()[0] == "approved"
    labels = [b.label for b in at.button[:5]]
    assert labels == ["Approve", "Swap", "Reject pair", "Skip", "Undo"]
    at.button[4].click().run()  # Undo brings the pair back
    assert shown_pair(at) == pairs[0]
    assert demo_ws.cursor().execute("SELECT status FROM pairs WHERE pair_id = ?", [pairs[0]]).fetchone()[0] == "pending"


def test_hostile_candidate_text_is_inert(demo_ws):
    pairs = add_review_run(demo_ws, 1)
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)> **bold** [x](javascript:alert(3)) ' + "<b>loop</b> " * 9000
    cid = demo_ws.cursor().execute("SELECT rejected_candidate_id FROM pairs WHERE pair_id = ?", [pairs[0]]).fetchone()[0]
    demo_ws.cursor().execute("UPDATE candidates SET text = ?, loops = ? WHERE candidate_id = ?",
                             [evil, '[{"start": 90, "end": %d, "period": 12, "repeats": 9000}]' % len(evil), cid])
    demo_ws.cursor().execute("UPDATE pairs SET rejected_text = ? WHERE pair_id = ?", [evil, pairs[0]])
    demo_ws.cursor().execute("UPDATE judgments SET rationale = '<script>alert(4)</script>' WHERE candidate_id = ?", [cid])
    at = review(demo_ws, "ana")
    bodies = "".join(h.proto.body for h in at.get("html"))
    assert "<script>" not in bodies and "<img" not in bodies and "<b>loop" not in bodies
    assert "&lt;script&gt;alert(1)" in bodies and "&lt;script&gt;alert(4)" in bodies
    assert len(bodies) < 200_000  # the 100k-character loop is folded and cut, not sent whole


def test_candidate_browser_filters_and_shows_a_selection(demo_ws):
    add_review_run(demo_ws, 2)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["workspace_path"] = str(demo_ws.root)
    at.run()
    at.switch_page("views/candidates.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.caption[0].value == "6 candidates"
    at.selectbox[1].select("looped").run()
    assert at.caption[0].value == "2 candidates" and not at.exception
    at.session_state["cands"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception and at.subheader[0].value.endswith("candidate 1")  # the first looped candidate
    bodies = "".join(h.proto.body for h in at.get("html"))
    assert "rationale for candidate 1" in bodies and "repeats" in bodies  # its judgment, and its loop folded


def test_a_pair_changed_by_someone_else_is_shown_again_not_overwritten(demo_ws):
    from core.review.decisions import decide

    pairs = add_review_run(demo_ws, 2)
    at = review(demo_ws, "bo")
    assert shown_pair(at) == pairs[0]
    decide(demo_ws, pairs[0], "swap", "ana", 0)  # ana decides bo's pair meanwhile
    at.button[0].click().run()  # bo approves what he saw (version 0)
    assert "changed since you opened it by ana" in at.warning[0].value and "swap" in at.warning[0].value
    assert shown_pair(at) == pairs[0] and "v1" in next(h.proto.body for h in at.get("html") if "lb-pair-id" in h.proto.body)
    cur = demo_ws.cursor()
    assert cur.execute("SELECT updated_by FROM pairs WHERE pair_id = ?", [pairs[0]]).fetchone()[0] == "ana"
    next(b for b in at.button if b.label == "Keep theirs and go on").click().run()  # bo chooses knowingly
    assert shown_pair(at) == pairs[1] and not at.warning
    assert cur.execute("SELECT count(*) FROM decisions WHERE reviewer = 'bo'").fetchone()[0] == 0
