"""render_text_html: everything from the model is escaped, loops are marked and folded."""

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from core.policy.detect import analyze
from core.present.render import render_css, render_text_html

ATTACKS = ['<script>alert(1)</script>', '<img src=x onerror="alert(1)">', "\"'&", "</details><script>x</script>", "&amp;<>"]


class _Tags(HTMLParser):
    """Collects the tags and attributes a browser would build from the HTML."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


OUR_TAGS = {"div", "mark", "details", "summary", "span"}
OUR_ATTRS = {"class", "style", "title"}


def _assert_safe(html: str) -> None:
    parsed = _parse(html)
    assert set(parsed.tags) <= OUR_TAGS
    assert {name for name, _ in parsed.attrs} <= OUR_ATTRS
    assert "<script" not in html and "<img" not in html


def test_attacks_in_every_position_are_escaped():
    for attack in ATTACKS:
        for text in (attack + "ok " * 50, "ok " * 50 + attack, "x" * 30 + attack * 40, (attack + " ") * 60 + "fim"):
            result = analyze(text, "length")
            html = render_text_html(text, result.loops)
            _assert_safe(html)
            assert html.count("<details") == len([lp for lp in result.loops if lp.end - lp.start > lp.period])


def test_quotes_and_ampersands_are_entities():
    html = render_text_html("a\"b'c&d<e>", [])
    assert "a&quot;b&#x27;c&amp;d&lt;e&gt;" in html


def test_loop_is_marked_and_folded_with_counts():
    text = "Início:\n" + "Parafuso sextavado; " * 38
    html = render_text_html(text, analyze(text, "length").loops)
    assert '<mark class="lb-loop-start"' in html
    assert "× 37 repeats, 740 chars — click to expand" in html
    assert html.index("Início:") < html.index("<mark")


def test_dict_loops_and_bad_spans_are_accepted():
    text = "abc" * 10
    html = render_text_html(text, [{"start": -5, "end": 999, "period": 3, "repeats": 10}, {"start": 3, "end": 6, "period": 3}])
    assert html.count("<details") == 1
    assert "× 9 repeats" in html


def test_huge_texts_are_cut_with_a_note():
    text = "Começo. " + "loop " * 60000
    html = render_text_html(text, analyze(text, "length").loops, max_chars=5000)
    assert len(html) < 20000
    assert "more characters of this loop not shown" in html
    html = render_text_html("a b c d e " * 30000, [], max_chars=5000)
    assert len(html) < 12000 and "characters not shown" in html


def test_css_is_plain():
    assert "<" not in render_css()


@settings(max_examples=150, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
       spans=st.lists(st.tuples(st.integers(-10, 400), st.integers(-10, 400), st.integers(0, 50)), max_size=4))
def test_escaping_holds_for_any_input(text, spans):
    loops = [{"start": a, "end": b, "period": p, "repeats": 2} for a, b, p in spans]
    html = render_text_html(text, loops)
    _assert_safe(html)
    visible = re.sub(r"<[^>]+>", "", html)
    assert "<" not in visible and ">" not in visible and '"' not in visible and "'" not in visible


def test_dataframe_cells_show_bidi_and_zero_width_characters_as_codes():
    import pandas as pd

    from core.present.render import visible_cells

    rows = [{"item_id": "inv\u202eexe.fdp", "n": 3, "note": None, "tags": ["a"]}, {"item_id": "a\u200b\u200bb", "n": 4, "note": "ok", "tags": []}]
    out = visible_cells(rows)
    assert list(out["item_id"]) == ["inv⟨U+202E⟩exe.fdp", "a⟨U+200B×2⟩b"]
    assert list(out["n"]) == [3, 4] and out["note"].isna()[0] and out["tags"][0] == ["a"]  # the rest as it was
    frame = pd.DataFrame({"model\u2066x": ["m\u2067"]})
    assert list(visible_cells(frame).columns) == ["model⟨U+2066⟩x"] and visible_cells(frame).iloc[0, 0] == "m⟨U+2067⟩"
    assert frame.iloc[0, 0] == "m\u2067"  # the caller's frame (its ids, for a selection) is untouched
    assert visible_cells([]).empty


def test_the_data_pages_table_shows_the_codes(ws):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.steps.importer import ImportFields, import_records, validate

    items = validate(iter([(1, {"id": "inv\u202eexe.fdp", "text": "FICHA \u200bnome:Ana"})]), Path("<t>"), ImportFields(), None)
    import_records(ws, items, "docs", source="test")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.session_state["workspace_path"] = str(ws.root)
    at.run()
    at.switch_page("views/data.py").run()
    assert not at.exception
    cells = at.dataframe[0].value.astype(str).to_numpy().ravel().tolist()
    assert "inv⟨U+202E⟩exe.fdp" in cells and not any("\u202e" in c or "\u200b" in c for c in cells)
