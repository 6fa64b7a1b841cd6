"""The Inspect page runs, and picking an example shows a verdict."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[1] / "views" / "inspect.py")


def test_inspect_page_shows_a_verdict():
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    at.selectbox(key="example").select("Templated table row to the limit").run()
    assert not at.exception
    assert any("Degenerate" in e.value for e in at.error)
    at.selectbox(key="example").select("Legit invoice cut at the limit").run()
    assert any("Not degenerate" in s.value for s in at.success)
    at.selectbox(key="example").select("Sentence loop that still ended").run()
    assert any("loop(s) found" in w.value for w in at.warning)
