"""The Review page under AppTest: a reviewer name is required, buttons decide, hostile model text stays inert."""

import json
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


def pane_data(at) -> dict:
    """What the page sent to the pair pane (the browser component) on its last run."""
    return json.loads(at.get("bidi_component")[0].proto.json)


def send(at, *decisions) -> dict:
    """The browser's outbox as the component's state (what review_pane.js sends), then a rerun."""
    at.session_state["lb_review_pane"] = {"outbox": list(decisions)}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return pane_data(at)


def test_asks_for_a_reviewer_name_first(demo_ws):
    at = review(demo_ws)
    assert "Reviewer" in at.info[0].value and not at.error


def test_the_outbox_is_applied_once_and_the_queue_refilled(demo_ws):
    pairs = add_review_run(demo_ws, 3)
    at = review(demo_ws, "ana")
    data = pane_data(at)
    assert data["order"] == pairs and set(data["views"]) == set(pairs)  # every pair of the queue, ready in the browser
    assert data["progress"] == {"done": 0, "left": 6, "total": 6, "you": 0, "others_html": ""}
    approve = {"id": "d1", "pair_id": pairs[0], "action": "approve", "version": 0}
    data = send(at, approve)
    assert data["acks"] == [{"id": "d1", "pair_id": pairs[0], "ok": True, "reason_html": ""}]
    assert data["order"] == pairs[1:] and data["views"] == {}  # nothing sent twice
    assert data["progress"]["done"] == 1 and data["progress"]["you"] == 1
    send(at, approve, {"id": "d2", "pair_id": pairs[1], "action": "swap", "version": 0})  # d1 again: applied once
    again = review(demo_ws, "ana")  # a reload: a new session, the outbox the browser kept
    data = send(again, approve, {"id": "d2", "pair_id": pairs[1], "action": "swap", "version": 0})
    assert [a["ok"] for a in data["acks"]] == [True, True] and data["order"] == pairs[2:]
    cur = demo_ws.cursor()
    assert cur.execute("SELECT decision_id, action FROM decisions ORDER BY created_at").fetchall() == [("d1", "approve"), ("d2", "swap")]
    data = send(again, {"id": "u1", "action": "undo_last"})  # after a reload the browser has no history: the server's
    assert data["acks"][-1]["ok"] and data["acks"][-1]["pair_id"] == pairs[1]
    assert pairs[1] in data["order"] and data["progress"]["done"] == 1
    assert cur.execute("SELECT status FROM pairs WHERE pair_id = ?", [pairs[1]]).fetchone()[0] == "pending"


def test_hostile_candidate_text_is_inert(demo_ws):
    pairs = add_review_run(demo_ws, 1)
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)> **bold** [x](javascript:alert(3)) ' + "<b>loop</b> " * 9000
    cid = demo_ws.cursor().execute("SELECT rejected_candidate_id FROM pairs WHERE pair_id = ?", [pairs[0]]).fetchone()[0]
    demo_ws.cursor().execute("UPDATE candidates SET text = ?, loops = ? WHERE candidate_id = ?",
                             [evil, '[{"start": 90, "end": %d, "period": 12, "repeats": 9000}]' % len(evil), cid])
    demo_ws.cursor().execute("UPDATE pairs SET rejected_text = ? WHERE pair_id = ?", [evil, pairs[0]])
    demo_ws.cursor().execute("UPDATE judgments SET rationale = '<script>alert(4)</script>' WHERE candidate_id = ?", [cid])
    at = review(demo_ws, "ana")
    view = pane_data(at)["views"][pairs[0]]
    markup = json.dumps({k: view[k] for k in view if k != "chosen_text"})  # what the pane puts in the page as HTML
    assert "<script>" not in markup and "<img" not in markup and "<b>loop" not in markup
    assert "&lt;script&gt;alert(1)" in markup and "&lt;script&gt;alert(4)" in markup
    assert len(markup) < 200_000  # the 100k-character loop is folded and cut, not sent whole
    rejected = next(c for c in view["candidates"] if c["role"] == "rejected")
    assert "&lt;script&gt;" in rejected["preview_html"] and "<script>" not in rejected["preview_html"]


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


def test_a_pair_changed_by_someone_else_is_refused_with_the_reason_not_overwritten(demo_ws):
    from core.review.decisions import decide

    pairs = add_review_run(demo_ws, 2)
    at = review(demo_ws, "bo")
    assert pane_data(at)["order"][0] == pairs[0]
    decide(demo_ws, pairs[0], "swap", "ana", 0)  # ana decides bo's pair meanwhile
    data = send(at, {"id": "b1", "pair_id": pairs[0], "action": "approve", "version": 0})  # bo approves what he saw
    ack = data["acks"][0]
    assert not ack["ok"] and "changed since you opened it by ana (swap)" in ack["reason_html"]
    assert data["views"][pairs[0]]["version"] == 1 and data["views"][pairs[0]]["status"] == "approved"  # its state now
    cur = demo_ws.cursor()
    assert cur.execute("SELECT updated_by FROM pairs WHERE pair_id = ?", [pairs[0]]).fetchone()[0] == "ana"
    assert cur.execute("SELECT count(*) FROM decisions WHERE reviewer = 'bo'").fetchone()[0] == 0
    data = send(at, {"id": "b2", "pair_id": pairs[1], "action": "pick_chosen", "version": 0, "chosen_candidate_id": "nope"})
    assert not data["acks"][-1]["ok"] and "not a candidate of this pair" in data["acks"][-1]["reason_html"]
