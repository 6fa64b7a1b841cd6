"""AppTest smoke tests: every page runs without an exception on an empty and on a demo workspace."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.store import counts

PAGES = ["views/home.py", "views/data.py", "views/sample.py", "views/judge.py", "views/review.py", "views/train.py", "views/candidates.py", "views/inspect.py"]
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def run_app(ws, page=None):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["workspace_path"] = str(ws.root)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("page", PAGES)
def test_each_page_on_an_empty_workspace(ws, page):
    at = run_app(ws, page)
    assert not at.error


@pytest.mark.parametrize("page", PAGES)
def test_each_page_on_the_demo(demo_ws, page):
    at = run_app(demo_ws, page)
    assert not at.error


def test_home_shows_counts_and_next_step(demo_ws):
    at = run_app(demo_ws)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Items"] == "22"
    assert any("Next: Register a model" in m.value for m in at.markdown)


def test_sample_defaults_lead_to_the_sft_model_the_train_split_and_a_small_first_run(demo_ws):
    from core.store.models import register_model

    register_model(demo_ws.cursor(), name="a-vanilla", path="/x/v", family="llama", stage="vanilla")
    register_model(demo_ws.cursor(), name="b-sft", path="/x/s", family="llama", stage="sft")
    at = run_app(demo_ws, "views/sample.py")
    boxes = {b.label: b for b in at.selectbox}
    assert boxes["Model"].value.startswith("b-sft") and boxes["Split"].value == "train"
    assert next(n for n in at.number_input if n.label.startswith("Limit items")).value == 50


def test_data_page_imports_a_path_and_reports_a_bad_file(demo_ws, tmp_path):
    good = tmp_path / "mine.jsonl"
    good.write_text(json.dumps({"id": "x1", "text": "FICHA nome:Ana"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x2", "text": "ok"}\n{"id": \n')

    at = run_app(demo_ws, "views/data.py")
    form_inputs = {t.label: t for t in at.text_input}
    form_inputs["…or a path on this machine (a file or a `datasets` folder)"].set_value(str(bad))
    form_inputs["Dataset name"].set_value("mine")
    at.button[0].click().run()
    assert any("bad.jsonl:2" in e.value for e in at.error)
    assert counts(demo_ws.cursor())["items"] == 22

    form_inputs = {t.label: t for t in at.text_input}
    form_inputs["…or a path on this machine (a file or a `datasets` folder)"].set_value(str(good))
    at.button[0].click().run()
    assert any("Imported 1 new items" in s.value for s in at.success)
    assert counts(demo_ws.cursor())["items"] == 23


def test_locked_workspace_shows_an_error_not_a_traceback(tmp_path):
    import subprocess
    import sys

    from core.store import open_workspace

    open_workspace(tmp_path / "held").close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from core.store import open_workspace; import time; open_workspace({str(tmp_path / 'held')!r}); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["workspace_path"] = str(tmp_path / "held")
        at.run()
        assert not at.exception
        assert any("is open in process" in e.value for e in at.error)
    finally:
        holder.kill()


def test_judge_page_shows_scores_and_previews_pairs(judged_ws):
    ws, _ = judged_ws
    at = run_app(ws, "views/judge.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Judged"] == "6" and metrics["Pairs"] == "1" and metrics["Rejected = degenerate"] == "1"
    write = next(b for b in at.button if b.label.startswith("Write 1 pairs"))
    write.click().run()
    assert any("1 new pending pairs" in s.value for s in at.success)
    assert counts(ws.cursor())["pairs_pending"] == 1
