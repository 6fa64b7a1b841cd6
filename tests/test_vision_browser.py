"""The demo VLM through every page, as a user clicks it in a real browser: Sample (the candidate shows the page
the model read), Judge and mine pairs, Review with the page in view, Train DPO, Evaluate SFT against SFT+DPO;
the store ends with the decisions, the new model and both evaluation runs."""

import re
from pathlib import Path

import pytest

from core.store import open_workspace
from core.store.models import register_model
from tests.conftest import StreamlitServer, click_first_row, wait_idle
from tests.test_vision import DEMO_VLM, fill_pages

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not (DEMO_VLM / "config.json").exists(), reason="the demo VLM is not built")]


def choose(page, label: str, option: str) -> None:
    """Pick an option of a Streamlit selectbox or multiselect by its label."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option).first.click()
    wait_idle(page)


def number(page, label: str, value: int) -> None:
    page.get_by_role("spinbutton", name=label).fill(str(value))


def done(page, run_kind: str, timeout: int = 180_000) -> None:
    """Wait for the newest run of a kind to be shown as done in its runs panel."""
    page.locator("p", has_text=f"{run_kind}-").filter(has_text="done").first.wait_for(timeout=timeout)
    wait_idle(page)


def test_the_vlm_loop_through_the_pages(browser, tmp_path: Path):
    w = open_workspace(tmp_path / "ws")
    fill_pages(w, tmp_path, n_train=4, n_test=2)
    register_model(w, name="vlm-sft", path=str(DEMO_VLM), family="gemma3", stage="sft")
    w.close()
    server = StreamlitServer(w.root)
    errors = []
    shots = tmp_path / "shots"
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.on("pageerror", lambda e: errors.append(str(e)))

        page.goto(f"{server.url}/sample")  # the form is open on a new workspace
        page.get_by_role("spinbutton", name="Candidates per item").wait_for(timeout=30_000)
        choose(page, "Split", "train")
        number(page, "Candidates per item", 4)
        number(page, "Max new tokens", 512)
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
        done(page, "sample")
        grid = page.locator("[data-testid=stDataFrame]").last
        click_first_row(page, grid, page.get_by_text("The page the model read", exact=False))
        page.locator("[data-testid=stImage] img").wait_for(timeout=10_000)
        page.screenshot(path=str(shots / "sample.png"))

        page.goto(f"{server.url}/judge")
        page.get_by_test_id("stBaseButton-primaryFormSubmit").wait_for(timeout=30_000)
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
        done(page, "judge")
        floor = page.get_by_role("slider").first  # the demo VLM is weak: lower the quality floor from 0.60 to 0.40
        floor.focus()
        for _ in range(4):
            floor.press("ArrowLeft")
        write = page.get_by_role("button", name=re.compile(r"Write [1-9]\d* pairs as pending"))
        write.wait_for(timeout=20_000)
        wait_idle(page)
        n_pairs = int(re.search(r"Write (\d+) pairs", write.inner_text()).group(1))
        assert n_pairs >= 1
        write.click()
        page.get_by_text("new pending pairs", exact=False).wait_for(timeout=20_000)

        page.goto(f"{server.url}/review?reviewer=vlm")
        pane = page.locator(".lb-pair-id")
        for k in range(n_pairs):
            pane.first.wait_for(timeout=30_000)
            page.locator("img.lb-page").wait_for(timeout=10_000)  # the page beside the document
            if k == 0:
                page.screenshot(path=str(shots / "review.png"))
            wait_idle(page)
            page.keyboard.press("a")
            page.get_by_text(f"{k + 1} done", exact=False).wait_for(timeout=20_000)
        page.get_by_text("Nothing left in this queue", exact=False).wait_for(timeout=20_000)

        page.goto(f"{server.url}/train")
        page.get_by_role("spinbutton", name="Max steps (-1 = epochs)").wait_for(timeout=30_000)
        number(page, "Max steps (-1 = epochs)", 2)
        page.get_by_label("Register as", exact=True).fill("vlm-dpo")
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
        done(page, "train", timeout=300_000)
        page.screenshot(path=str(shots / "train.png"))

        page.goto(f"{server.url}/evaluate")
        page.get_by_test_id("stBaseButton-primaryFormSubmit").wait_for(timeout=30_000)
        choose(page, "Models", "vlm-sft  (gemma3 · sft)")
        choose(page, "Models", "vlm-dpo  (gemma3 · dpo)")
        page.keyboard.press("Escape")
        page.screenshot(path=str(shots / "evaluate-form.png"))
        number(page, "Sampled per item", 0)
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
        for stage in ("SFT", "SFT+DPO"):  # a bar per stage in the family chart once each run is done
            page.locator(".legendtext").filter(has_text=re.compile(f"^{re.escape(stage)}$")).first.wait_for(timeout=300_000)
        wait_idle(page)
        page.screenshot(path=str(shots / "evaluate.png"))
        assert page.locator("[data-testid=stException]").count() == 0 and not errors
    finally:
        page.screenshot(path=str(shots / "last.png"))  # where it stood, for a failure
        server.stop()
    w = open_workspace(w.root)
    try:
        cur = w.cursor()
        assert cur.execute("SELECT count(*) FROM pairs WHERE status = 'approved' AND updated_by = 'vlm'").fetchone()[0] == n_pairs
        assert cur.execute("SELECT family, stage, parent FROM models WHERE name = 'vlm-dpo'").fetchone() == ("gemma3", "dpo", "vlm-sft")
        evals = cur.execute("SELECT r.model, count(c.image_hash), count(*) FROM runs r JOIN candidates c USING (run_id) "
                            "WHERE r.kind = 'eval' AND r.status = 'done' GROUP BY 1 ORDER BY 1").fetchall()
        assert evals == [("vlm-dpo", 2, 2), ("vlm-sft", 2, 2)]  # greedy on both test pages, each from its page
    finally:
        w.close()
