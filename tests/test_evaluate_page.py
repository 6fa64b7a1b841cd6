"""The Evaluate page in a real browser: the per-family chart, the same numbers as `loopbreak report`, a degenerate output folded."""

import pytest

from core.steps.evaluate import report
from core.store import open_workspace
from tests.conftest import StreamlitServer, fill_demo, wait_idle
from tests.eval_data import add_eval_runs

pytestmark = pytest.mark.browser


def test_evaluate_page_shows_the_family_chart_and_the_report_numbers(browser, tmp_path):
    w = open_workspace(tmp_path / "ws")
    fill_demo(w, n_test=20)
    add_eval_runs(w)
    rep = report(w, "demo", "test")
    w.close()
    server = StreamlitServer(w.root)
    errors = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/evaluate")
        page.get_by_text("Degeneration by family and stage").wait_for(timeout=30_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=90_000)
        wait_idle(page)
        assert page.locator(".js-plotly-plot text", has_text="DPO vs SFT: −80%").count() == 1
        # 20 items: no bold mean reduction, but the reason there is no evidence yet
        assert rep["weak_evidence"].startswith("only 20 held-out items")
        page.get_by_text("not enough evidence yet", exact=False).wait_for()
        assert page.get_by_text(f"{100 * rep['mean_dpo_reduction']:.1f}%").count() == 0
        # the model that looped most opens first, its loop folded in the page
        page.get_by_text("demo-test-00000 · length · 480 tokens · quality 0.2").wait_for(timeout=10_000)
        page.locator(".lb-fold, details").first.wait_for(timeout=10_000)
        assert page.locator("[data-testid=stException]").count() == 0 and not errors
    finally:
        server.stop()
