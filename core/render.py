"""HTML for a candidate's text with its loops folded: the component the Inspect and Review pages share.

Model text is untrusted: every character of it goes through ``html.escape(..., quote=True)``; the
only markup is ours. Each loop shows its first unit highlighted (where the loop starts) and folds
the repeats into a ``<details>`` block, so a 30,000-character degenerate tail takes one line until
someone asks for it. No JavaScript: ``<details>`` expands natively. Very long texts are cut inside
the folded block and in long plain stretches (with a note), so a browser never gets megabytes.
"""

from __future__ import annotations

from html import escape

from core.detect import Loop

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
        f".lb-fold>summary{{{_SUMMARY}}} .lb-note{{{_NOTE}}}"
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
        return escape(text, quote=True)
    half = max_chars // 2
    hidden = len(text) - 2 * half
    return escape(text[:half], quote=True) + _note(f"\n… {hidden:,} characters not shown …\n") + escape(text[-half:], quote=True)


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
        parts.append(f'<mark class="lb-loop-start" style="{_START}" title="loop starts here">{escape(first, quote=True)}</mark>')
        rest = text[start + period:end]
        if rest:
            folded_repeats = max(1, round(repeats - 1))
            shown = escape(rest[:max_chars], quote=True)
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
