"""Reviewers work in a real browser with the keyboard only: the pane shows the next pair at once and
stores each decision behind it; undo, a reload, a focused toggle and a conflict between two browser
contexts lose nothing, and the store's decisions and audit log are exactly what was decided."""

import re

import pytest

from core.store import open_workspace
from tests.conftest import StreamlitServer, fill_demo, wait_idle
from tests.review_data import add_review_run

pytestmark = pytest.mark.browser
ACTION = {"a": "approve", "s": "swap", "x": "reject", "k": "skip"}
OVERRIDES = {"swap", "reject"}


def shown(page) -> str | None:
    """The pair on screen (the pane's lb-pair-id), or None when the queue is empty."""
    loc = page.locator(".lb-pair-id")
    return re.match(r"pair (\S+) ", loc.inner_text()).group(1) if loc.count() else None


def wait_for_pair(page, pair_id: str) -> None:
    page.locator(".lb-pair-id").filter(has_text=f"pair {pair_id} ").wait_for(timeout=20_000)


def press(page, key: str) -> tuple[str, str]:
    """Press a decision key on the pair shown; wait until another pair shows (the next ones may still be
    loading when keys come faster than any reviewer's), or the queue is empty."""
    before = shown(page)
    assert before, "no pair on screen"
    page.keyboard.press(key)
    page.wait_for_function("""b => { const e = document.querySelector('.lb-pair-id');
        return e ? !e.textContent.startsWith('pair ' + b + ' ') : !!document.querySelector('.lb-empty'); }""",
                           arg=before, timeout=20_000)
    return before, ACTION[key]


def all_stored(page) -> None:
    page.locator(".lb-sync").filter(has_text="all stored").wait_for(timeout=30_000)


def open_review(context, server, reviewer: str):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog {d.message}"), d.dismiss()))
    page.goto(f"{server.url}/review?reviewer={reviewer}")
    page.locator(".lb-pair-id").wait_for(timeout=30_000)
    return page, errors


def test_three_pairs_by_keyboard_only_and_hostile_text_stays_text(browser, tmp_path):
    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    pairs = add_review_run(w, 3)
    # The first pair's rejected side is hostile: markup, an event handler, and a 100k-character loop.
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)> **b** ' + "<i>again</i> " * 8000
    w.cursor().execute("UPDATE pairs SET rejected_text = ? WHERE pair_id = ?", [evil, pairs[0]])
    w.close()
    server = StreamlitServer(w.root)
    try:
        page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (errors.append(f"dialog {d.message}"), d.dismiss()))
        page.goto(f"{server.url}/review")
        name = page.get_by_role("textbox", name="Reviewer")
        name.fill("kbd")
        name.press("Enter")  # after typing the name, the keys go to the pane: no click needed
        wait_for_pair(page, pairs[0])
        page.get_by_text("<script>alert(1)</script>", exact=False).first.wait_for()  # shown as text
        assert page.locator("img[src=x]").count() == 0 and page.locator(".lb-pane i").count() == 0
        for key, after in (("a", pairs[1]), ("s", pairs[2]), ("x", pairs[3])):
            press(page, key)
            wait_for_pair(page, after)
        page.get_by_text("3 done · 3 left · you 3", exact=False).wait_for(timeout=10_000)
        all_stored(page)
        page.locator(".lb-confirm").filter(has_text=f"Rejected pair {pairs[2]}").wait_for()
        assert page.locator("[data-testid=stException]").count() == 0 and not errors
    finally:
        server.stop()
    w = open_workspace(w.root)
    try:
        cur = w.cursor()
        rows = cur.execute("SELECT pair_id, reviewer, action FROM decisions ORDER BY created_at").fetchall()
        assert rows == [(pairs[0], "kbd", "approve"), (pairs[1], "kbd", "swap"), (pairs[2], "kbd", "reject")]
        status = dict(cur.execute("SELECT pair_id, status FROM pairs").fetchall())
        assert [status[p] for p in pairs[:4]] == ["approved", "approved", "rejected", "pending"]
        assert [k for (k,) in cur.execute("SELECT kind FROM audit_log ORDER BY created_at").fetchall()] == ["swap", "reject"]
    finally:
        w.close()


def test_thirty_pairs_with_a_focused_toggle_undo_a_reload_and_a_conflict(browser, tmp_path):
    w = open_workspace(tmp_path / "ws")
    fill_demo(w, n_train=24)
    add_review_run(w, 20)  # 40 pending pairs
    w.close()
    server = StreamlitServer(w.root)
    expected: list[tuple[str, str, str]] = []  # (pair, reviewer, action) as the store must hold them, in order
    try:
        page, errors = open_review(browser.new_context(viewport={"width": 1400, "height": 1600}), server, "kbd")
        for i, key in enumerate("asxak" * 6):  # 30 decisions: approve, swap, reject, approve, skip
            if i % 3 == 1:  # part of the time a toggle has the focus: one of the page's filters, or the pane's own
                (page.locator("input[type=checkbox]").first if i % 2 else page.locator(".lb-pane input[type=checkbox]").first).focus()
            pair, action = press(page, key)
            expected.append((pair, "kbd", action))
            if i == 7:  # undo (of a reject): the pair comes back, and is decided again
                page.keyboard.press("u")
                wait_for_pair(page, pair)
                expected.append((pair, "kbd", "undo"))
                pair, action = press(page, "a")
                expected.append((pair, "kbd", action))
            if i == 17:  # a reload right after a key: the decision shown as made is not lost
                page.reload()
                page.locator(".lb-pair-id").wait_for(timeout=30_000)
                wait_idle(page)
        all_stored(page)
        # Typing in a text field is typing, not deciding.
        before = shown(page)
        box = page.get_by_role("textbox", name="Decided by")
        box.focus()
        page.keyboard.type("xa")
        assert shown(page) == before
        box.fill("")
        page.locator("h1").first.click()
        wait_idle(page)

        # A conflict between two browser contexts (the same reviewer in a second window): both hold the same pair.
        other, errors_b = open_review(browser.new_context(viewport={"width": 1400, "height": 1600}), server, "kbd")
        wait_for_pair(other, before)
        pair, action = press(other, "a")
        expected.append((pair, "kbd", action))
        other.locator(".lb-sync").filter(has_text="all stored").wait_for(timeout=20_000)
        page.keyboard.press("x")  # the first window still shows it at the old version: refused, brought back with the reason
        page.get_by_text("changed since you opened it by kbd (approve)", exact=False).wait_for(timeout=20_000)
        assert shown(page) == before
        press(page, "k")  # keep theirs and go on: nothing recorded
        all_stored(page)
        assert page.locator("[data-testid=stException]").count() == 0 and not errors and not errors_b
    finally:
        server.stop()

    w = open_workspace(w.root)
    try:
        cur = w.cursor()
        assert cur.execute("SELECT pair_id, reviewer, action FROM decisions ORDER BY created_at").fetchall() == expected
        want, done = [], []
        for _, _, a in expected:  # the audit log: every override, and the undo of one
            if a in OVERRIDES:
                want.append(a)
            if a == "undo":
                if done.pop() in OVERRIDES:
                    want.append("undo")
            elif a != "skip":
                done.append(a)
        assert [k for (k,) in cur.execute("SELECT kind FROM audit_log ORDER BY created_at").fetchall()] == want
        decided = len(done)
        assert cur.execute("SELECT count(*) FROM pairs WHERE status <> 'pending' AND updated_by = 'kbd'").fetchone()[0] == decided
    finally:
        w.close()
