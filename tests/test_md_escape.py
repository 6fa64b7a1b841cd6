"""md_escape (untrusted text inside Markdown labels) and the visible invisible characters of render_text_html.

A CommonMark parser checks that no markup forms; the Streamlit-only syntax (:color[…], :emoji:,
:material/…:, $LaTeX$, GFM autolinks) is checked on the escaped string here and in a real browser by
test_hostile_browser.py.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.present.render import md_escape, render_text_html
from tests.hostile import PAYLOADS

WJ = "\u2060"
LABELS = [p for _, p in PAYLOADS] + [
    "- a list", "1. ordered", "    indented code", "\t\tcode", "***", "---", "   - x", "12) ordered", "+ plus", "> quote", "=== setext", "# heading", "a\n# heading\n\n- item",
    "`code`", "``x``", "**b** __b__ *i* _i_ ~~s~~", "[x](http://e.example) ![i](http://e.example/i.png) <http://e.example>",
    "&lt;b&gt; &#x3C; &amp;", "| a | b |\n|---|---|\n| 1 | 2 |", "back\\slash\\", "<b>raw</b> <!-- c -->",
]


def _render(md: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable(["strikethrough", "table"]).render(md)


@pytest.mark.parametrize("label", LABELS)
def test_no_markup_forms_from_an_escaped_label(label):
    html = _render(md_escape(label, 10_000))
    tags = set(re.findall(r"<([a-z0-9]+)", html))
    assert tags <= {"p"}, (label, html)
    assert html.count("<p>") <= 1


def test_streamlit_syntax_is_broken():
    s = md_escape(":red[x] :blue-background[y] :material/skull: :skull: $x^2$ $$y$$ http://evil.example www.evil.example")
    assert ":red[" not in s and r"\[x\]" in s
    assert ":material/" not in s and ":skull:" not in s and f":{WJ}skull:" in s
    assert "$x" not in s.replace(r"\$", "") and r"\$x^2\$" in s
    assert "http://" not in s and "www." not in s


def test_readable_text_stays_as_typed():
    for plain in ("1.5 kg", "2024-01-01", "bad.jsonl:2", "/no/such/model' does not exist", "ana@example.com", "run sample-1 (3 items), 50% done?"):
        assert md_escape(plain) == plain


def test_lines_invisibles_and_length():
    assert md_escape("a\nb\r\nc\td") == "a b c d"
    assert md_escape("x\u202ey\u200b\u200bz\x00") == "x⟨U+202E⟩y⟨U+200B×2⟩z⟨U+0000⟩"
    assert md_escape("a" * 500, 10) == "a" * 10 + "…"


def test_render_shows_bidi_and_zero_width_characters():
    html = render_text_html("invoice_\u202egpj.exe\u202c ok\u200b\u200b\u200b", [])
    assert "\u202e" not in html and "\u200b" not in html
    assert ">U+202E</span>gpj.exe" in html and ">U+200B×3</span>" in html and 'title="RIGHT-TO-LEFT OVERRIDE"' in html


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=120))
def test_any_text_escapes_to_one_plain_paragraph(text):
    html = _render(md_escape(text, 10_000))
    assert set(re.findall(r"<([a-z0-9]+)", html)) <= {"p"}, (text, html)
