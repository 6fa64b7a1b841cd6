"""The attractor figure in a real browser: Candidates page, a real loop of the demo model, one click."""

import pytest

from tests.attractor_data import add_loop_candidate, demo_loop
from tests.conftest import StreamlitServer, click_first_row, wait_idle

pytestmark = pytest.mark.browser


def test_candidates_page_draws_the_attractor_of_a_real_loop(browser, tmp_path):
    from core.store import open_workspace

    w = open_workspace(tmp_path / "ws")
    add_loop_candidate(w, demo_loop("llama", "demo-validation-00031"))
    w.close()
    server = StreamlitServer(w.root)
    errors = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/candidates")
        button = page.get_by_role("button", name="Attractor: token probabilities")
        click_first_row(page, page.locator("[data-testid=stDataFrame]"), button)
        wait_idle(page)
        button.click()
        page.locator("[data-testid=stPlotlyChart]").wait_for(timeout=60_000)
        page.get_by_text("Inside the loop the model gives its repeats p≈", exact=False).wait_for(timeout=10_000)
        wait_idle(page)
        assert page.locator("[data-testid=stPlotlyChart] .vrect, [data-testid=stPlotlyChart] .shapelayer path").count() >= 1
        assert page.locator("[data-testid=stException]").count() == 0, page.inner_text("body")[:2000]
        assert not errors
    finally:
        server.stop()
