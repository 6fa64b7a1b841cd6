"""The page image in the browser: a VLM run's candidate shows the page the model read beside its text, and a
reviewer decides a pair of that run with the page in view; the decision lands in the store."""

from pathlib import Path

import pytest

from core import jobs
from core.judges.base import JudgeConfig
from core.policy.mining import PairPolicy
from core.samplers.base import DecodingConfig
from core.steps.judge import start_judging
from core.steps.pairs import mine_run
from core.steps.sample import SampleConfig, start_sampling
from core.store import open_workspace
from core.store.models import register_model
from tests.conftest import StreamlitServer, click_first_row, wait_idle
from tests.test_vision import DEMO_VLM, fill_pages

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not (DEMO_VLM / "config.json").exists(), reason="the demo VLM is not built")]


def test_vlm_candidates_and_review_show_the_page(browser, tmp_path: Path):
    w = open_workspace(tmp_path / "ws")
    fill_pages(w, tmp_path, n_train=4)
    register_model(w, name="vlm-sft", path=str(DEMO_VLM), family="gemma3", stage="sft")
    run = start_sampling(w, SampleConfig(model="vlm-sft", dataset="demo", split="train",
                                         decoding=DecodingConfig(n=4, max_new_tokens=256, seed=0)))
    assert jobs.wait(w, run).status == "done", jobs.read_log(w, run)
    judge = start_judging(w, run, JudgeConfig())
    assert jobs.wait(w, judge).status == "done"
    mined = mine_run(w, judge, PairPolicy(min_margin=0.01))
    assert mined["pairs"] >= 1, mined
    w.close()

    server = StreamlitServer(w.root)
    errors = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/sample")
        grid = page.locator("[data-testid=stDataFrame]").last
        grid.wait_for(timeout=30_000)
        caption = page.get_by_text("The page the model read", exact=False)
        click_first_row(page, grid, caption)
        page.locator("[data-testid=stImage] img").wait_for(timeout=10_000)
        page.screenshot(path=str(tmp_path / "sample.png"))

        page.goto(f"{server.url}/review?reviewer=vlm")
        pane = page.locator(".lb-pair-id")
        pane.first.wait_for(timeout=30_000)
        page.locator("[data-testid=stImage] img").wait_for(timeout=10_000)  # the page beside the document
        page.screenshot(path=str(tmp_path / "review.png"))
        shown = pane.inner_text().split()[1]
        wait_idle(page)
        page.keyboard.press("a")
        page.get_by_text("1 done", exact=False).wait_for(timeout=20_000)
        assert page.locator("[data-testid=stException]").count() == 0 and not errors
    finally:
        server.stop()
    w = open_workspace(w.root)
    try:
        assert w.cursor().execute("SELECT status, updated_by FROM pairs WHERE pair_id = ?", [shown]).fetchone() == ("approved", "vlm")
    finally:
        w.close()
