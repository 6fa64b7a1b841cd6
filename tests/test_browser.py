"""A real browser against a real `streamlit run`: pages load, nothing raises, items are browsable."""

import pytest

from tests.conftest import click_first_row

pytestmark = pytest.mark.browser


def open_page(browser, url, errors):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("[data-testid=stAppViewContainer]")
    page.wait_for_selector("[data-testid=stSidebarNav]", timeout=30_000)
    return page


def assert_clean(page, errors):
    assert page.locator("[data-testid=stException]").count() == 0, page.inner_text("body")[:2000]
    assert page.locator("[data-testid=stAlertContentError]").count() == 0, page.inner_text("body")[:2000]
    assert not errors


def test_home_and_data_in_a_real_browser(browser, app_server):
    errors = []
    # A deep link first, as after an app restart with the browser left on a page.
    page = open_page(browser, f"{app_server.url}/data", errors)
    page.get_by_text("Items", exact=True).wait_for()
    page.get_by_text("22 items", exact=True).wait_for(timeout=20_000)
    nav = page.locator("[data-testid=stSidebarNav]").inner_text()
    assert "Home" in nav and "Data" in nav
    assert_clean(page, errors)

    # Select the first item: its document and reference appear.
    reference = page.get_by_text("Reference", exact=True)
    click_first_row(page, page.locator("[data-testid=stDataFrame]"), reference)
    reference.wait_for(timeout=1_000)
    assert page.locator("h3").filter(has_text="demo-test-00000").count() == 1
    assert_clean(page, errors)

    page.locator("[data-testid=stSidebarNav] a").filter(has_text="Home").click()
    page.get_by_text("Next: Register a model.").wait_for(timeout=20_000)
    assert page.locator("[data-testid=stMetricValue]").first.inner_text() == "22"
    assert_clean(page, errors)


def test_sample_page_runs_a_job_and_shows_candidates(browser, tmp_path, tiny_model):
    """Start a sampling run from the page, watch it finish, open a candidate; then reload."""
    from core.store import open_workspace
    from core.store.models import register_model
    from tests.conftest import StreamlitServer, fill_demo

    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    register_model(w.cursor(), name="tiny-sft", path=str(tiny_model), family="llama", stage="sft")
    w.close()
    server = StreamlitServer(w.root)
    errors = []
    try:
        page = open_page(browser, f"{server.url}/sample", errors)
        limit = page.get_by_role("spinbutton", name="Limit items (0 = all)")
        assert limit.input_value() == "50"  # a small first run by default, not every item
        limit.fill("2")
        page.get_by_role("spinbutton", name="Max new tokens").fill("16")
        page.get_by_role("spinbutton", name="Candidates per item").fill("2")
        page.get_by_role("spinbutton", name="Candidates per item").press("Enter")  # Enter in a field starts nothing
        page.wait_for_timeout(2_000)
        assert page.get_by_text("Started sample", exact=False).count() == 0 and page.get_by_text("done", exact=True).count() == 0
        page.get_by_text("Run", exact=True).click()
        page.get_by_text("done", exact=True).first.wait_for(timeout=120_000)
        page.get_by_text("6", exact=True).first.wait_for(timeout=20_000)  # 2 items x (greedy + 2)
        assert_clean(page, errors)

        click_first_row(page, page.locator("[data-testid=stDataFrame]").last, page.get_by_text("Metrics:", exact=False))
        assert page.get_by_text("candidate 0", exact=False).count() >= 1
        page.reload()
        page.get_by_text("done", exact=True).first.wait_for(timeout=30_000)
        assert_clean(page, errors)
    finally:
        server.stop()
