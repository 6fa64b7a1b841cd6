"""HTML for a candidate's text with its loops folded: the component the Inspect and Review pages share.

Model text is untrusted: every character of it goes through ``html.escape(..., quote=True)``; the
only markup is ours, and invisible or bidi-control characters (zero-width spaces, U+202E…) show as
small visible codes, so they can neither hide in a text nor reverse the page around it. ``md_escape``
does the same for ids, names and messages placed in Markdown. Each loop shows its first unit highlighted (where the loop starts) and folds
the repeats into a ``<details>`` block, so a 30,000-character degenerate tail takes one line until
someone asks for it. No JavaScript: ``<details>`` expands natively. Very long texts are cut inside
the folded block and in long plain stretches (with a note), so a browser never gets megabytes.
"""

from __future__ import annotations

import re
import unicodedata
from html import escape

from core.policy.detect import Loop

# Characters that change how text reads without being seen: bidi overrides and isolates (an
# unterminated U+202E reverses everything after it, our own labels included), zero-width
# characters, C0/C1 controls (except tab, newline, carriage return). Shown as visible codes.
_INVISIBLE = re.compile("([\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e"
                        "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])\\1*")  # a run of one such character
_CTL = "color:#888;font-size:0.75em"
# Markdown in Streamlit: what could turn a label's text into markup. Escaped with a backslash; the
# rest of the punctuation stays as typed, so "file.jsonl:2" or "/models/x" still read (and match) as is.
_MD_ALWAYS = re.compile(r"([\\`*_\[\]<>#~$&|{}])")  # emphasis, code, links/images/directives, autolinks, LaTeX, entities
# Streamlit replaces :emoji: and :material/icon: shortcodes, and GFM links www.… and http://…, in the
# text *after* parsing, where a backslash is gone: an invisible WORD JOINER (U+2060) breaks them instead.
_WJ = "\u2060"
_MD_COLON = re.compile(r":(?=[A-Za-z/])")
_MD_WWW = re.compile(r"(?i)\b(www)\.")
_MD_START = re.compile(r"^([-+]|\d{1,9}(?=[.)](?:\s|$)))")  # a list item or a --- rule at the start


def _code(m: re.Match) -> str:
    """U+202E, or U+200B×40 for a run."""
    n = len(m.group())
    return f"U+{ord(m.group(1)):04X}" + (f"×{n}" if n > 1 else "")


def escape_text(text: str) -> str:
    """HTML-escaped text, invisible and bidi-control characters shown as small visible codes."""
    out = escape(text, quote=True)
    if not _INVISIBLE.search(out):
        return out
    return _INVISIBLE.sub(
        lambda m: f'<span class="lb-ctl" style="{_CTL}" title="{escape(unicodedata.name(m.group(1), "control character"))}">'
                  f"{_code(m)}</span>", out)


def show_codes(text: str) -> str:
    """Plain text shown as text (a dataframe cell, a column name): invisible and bidi-control characters
    as ``⟨U+202E⟩``, so a right-to-left override cannot reorder what a cell shows."""
    return _INVISIBLE.sub(lambda m: f"⟨{_code(m)}⟩", text) if _INVISIBLE.search(text) else text


def visible_cells(data):
    """A table for st.dataframe — a DataFrame, or rows as dicts — with every text cell, column name and
    index label passed through :func:`show_codes`. Other cells (numbers, None, lists) are left as they are."""
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    if data.empty and not len(data.columns):
        return data
    out = data.copy()
    fix = lambda v: show_codes(v) if isinstance(v, str) else v  # noqa: E731
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(fix)
    out.columns = [fix(c) for c in out.columns]
    if out.index.dtype == object:
        out.index = out.index.map(fix)
    return out


def md_escape(text, max_chars: int = 300) -> str:
    """Untrusted text (ids, names, paths, error messages quoting a file or a server) for a Markdown
    string (st.markdown, st.caption, st.error, widget labels): the characters that make Markdown
    backslash-escaped, so no emphasis, code, link, autolink, image, heading, list, ``:color[…]``,
    ``:material/…:``, ``:emoji:`` or ``$LaTeX$`` can form; line breaks folded to spaces, ends stripped;
    invisible and bidi-control characters written as ``⟨U+202E⟩``; at most ``max_chars`` characters
    (then "…")."""
    s = str(text)
    if len(s) > max_chars:
        s = s[:max_chars] + "…"
    s = s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ").strip()  # 4 leading spaces: a code block
    s = _INVISIBLE.sub(lambda m: f"⟨{_code(m)}⟩", s)
    s = _MD_ALWAYS.sub(r"\\\1", s)
    s = _MD_WWW.sub(r"\1" + _WJ + ".", _MD_COLON.sub(":" + _WJ, s))
    m = _MD_START.match(s)
    if m:  # "- x" -> "\- x", "1. x" -> "1\. x"
        s = "\\" + s if not s[0].isdigit() else s[:m.end()] + "\\" + s[m.end():]
    return s


_BOX = (
    "white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;"
    "font-size:0.85rem;line-height:1.45;padding:0.6rem 0.8rem;border:1px solid rgba(128,128,128,0.35);"
    "border-radius:0.4rem;max-height:32rem;overflow:auto"
)
_START = "background:#ffd54f;color:#000;border-left:3px solid #e65100;padding:0 1px"
_FOLD = "display:inline;background:rgba(230,81,0,0.10);border-radius:0.2rem"
_SUMMARY = "display:inline;cursor:pointer;color:#e65100;font-weight:600;font-family:system-ui,sans-serif"
_NOTE = "color:#888;font-style:italic;font-family:system-ui,sans-serif"


def render_css() -> str:
    """Class-based styles for pages that prefer a stylesheet to the inline styles."""
    return (
        f".lb-text{{{_BOX}}} .lb-loop-start{{{_START}}} .lb-fold{{{_FOLD}}} "
        f".lb-fold>summary{{{_SUMMARY}}} .lb-note{{{_NOTE}}} .lb-ctl{{{_CTL}}}"
    )


def _spans(text: str, loops) -> list[tuple[int, int, int, float]]:
    """(start, end, period, repeats) of each loop, clamped to the text, sorted, overlaps dropped."""
    spans = []
    for loop in loops:
        d = loop.to_dict() if isinstance(loop, Loop) else loop
        start = max(0, min(len(text), int(d["start"])))
        end = max(start, min(len(text), int(d["end"])))
        period = max(1, min(end - start, int(d.get("period") or end - start or 1)))
        if end > start:
            spans.append((start, end, period, float(d.get("repeats") or (end - start) / period)))
    kept: list[tuple[int, int, int, float]] = []
    for span in sorted(spans):
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept


def _note(text: str) -> str:
    return f'<span class="lb-note" style="{_NOTE}">{text}</span>'


def _plain(text: str, max_chars: int) -> str:
    """Escaped text; a stretch longer than max_chars keeps its head and tail around a note."""
    if len(text) <= max_chars:
        return escape_text(text)
    half = max_chars // 2
    hidden = len(text) - 2 * half
    return escape_text(text[:half]) + _note(f"\n… {hidden:,} characters not shown …\n") + escape_text(text[-half:])


def render_text_html(text: str, loops: list[Loop] | list[dict], *, max_chars: int = 20000) -> str:
    """The text as one HTML block: loops' first units marked, their repeats folded.

    The fold's summary reads "× 37 repeats, 4,211 chars — click to expand" (the repeats after the
    first unit and the characters folded); at most ``max_chars`` of a fold or of a plain stretch
    are sent to the browser.
    """
    parts = [f'<div class="lb-text" style="{_BOX}">']
    pos = 0
    for start, end, period, repeats in _spans(text, loops):
        parts.append(_plain(text[pos:start], max_chars))
        first = text[start:start + period]
        parts.append(f'<mark class="lb-loop-start" style="{_START}" title="loop starts here">{escape_text(first)}</mark>')
        rest = text[start + period:end]
        if rest:
            folded_repeats = max(1, round(repeats - 1))
            shown = escape_text(rest[:max_chars])
            if len(rest) > max_chars:
                shown += _note(f"\n… {len(rest) - max_chars:,} more characters of this loop not shown")
            parts.append(
                f'<details class="lb-fold" style="{_FOLD}"><summary style="{_SUMMARY}">'
                f"× {folded_repeats:,} repeats, {len(rest):,} chars — click to expand</summary>{shown}</details>"
            )
        pos = end
    parts.append(_plain(text[pos:], max_chars))
    parts.append("</div>")
    return "".join(parts)
