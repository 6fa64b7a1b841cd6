"""A word-level diff of a text against its reference, as escaped HTML."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_INS = "background:rgba(46,160,67,0.25)"


_DEL = "background:rgba(248,81,73,0.25);text-decoration:line-through"


def diff_html(text: str, reference: str, max_chars: int = 6000) -> str:
    """A word-level diff of a text against the reference, escaped; both are cut to max_chars so a loop cannot stall it."""
    from core.present.render import escape_text

    a, b = re.split(r"(\s+)", (reference or "")[:max_chars]), re.split(r"(\s+)", (text or "")[:max_chars])
    out = ['<div style="white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;font-size:0.8rem">']
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(escape_text("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f'<span style="{_DEL}">{escape_text("".join(a[i1:i2]))}</span>')
        if j2 > j1:
            out.append(f'<span style="{_INS}">{escape_text("".join(b[j1:j2]))}</span>')
    if max(len(text or ""), len(reference or "")) > max_chars:
        out.append(f'<span style="color:#888;font-style:italic">\n… only the first {max_chars:,} characters compared</span>')
    return "".join(out) + "</div>"
