"""A reviewer works through three pairs with the keyboard only, in a real browser; the store records each decision."""

import pytest

from core.store import open_workspace
from tests.conftest import StreamlitServer, fill_demo, wait_idle
from tests.review_data import add_review_run

pytestmark = pytest.mark.browser


def wait_for_pair(page, pair_id: str) -> None:
    page.locator(".lb-pair-id").filter(has_text=f"pair {pair_id} ").wait_for(timeout=20_000)


def test_three_pairs_by_keyboard_only(browser, tmp_path):
    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    pairs = add_review_run(w, 3)
    # The first pair's rejected side is hostile: markup, an event handler, and a 100k-character loop.
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)> **b** ' + "<i>again</i> " * 8000
    w.cursor().execute("UPDATE pairs SET rejected_text = ? WHERE pair_id = ?", [evil, pairs[0]])
    w.close()
    server = StreamlitServer(w.root)
    errors = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (errors.append(f"dialog {d.message}"), d.dismiss()))
        page.goto(f"{server.url}/review?reviewer=kbd")  # the name is remembered in the address
        wait_for_pair(page, pairs[0])
        page.get_by_text("Agreement, bulk decisions", exact=False).wait_for()  # the page's first run is complete
        page.get_by_text("<script>alert(1)</script>", exact=False).first.wait_for()  # shown as text
        assert page.locator("img[src=x]").count() == 0 and page.locator("i", has_text="again").count() == 0
        for key, after in (("a", pairs[1]), ("s", pairs[2]), ("x", pairs[3])):
            wait_idle(page)
            page.keyboard.press(key)
            wait_for_pair(page, after)
        page.get_by_text("3 done · 3 left", exact=False).wait_for(timeout=10_000)
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
