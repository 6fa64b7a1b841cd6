"""One pair as the Review page's browser pane holds it: every text rendered and escaped here, on the
server, so the pane's JavaScript only places finished HTML and never builds markup from model or
document text (what it writes itself goes through ``textContent``)."""

from __future__ import annotations

from core.present.diff import diff_html
from core.present.render import escape_text, render_text_html

EDITABLE_CHARS = 20000  # a chosen text longer than this is not offered for correction in a text box


def _score(j: dict | None) -> float | None:
    return j.get("overall") if j and isinstance(j.get("overall"), (int, float)) else None


def _side(title: str, s: dict, reference: str | None, show_diff: bool) -> dict:
    j = s["judgment"] or {}
    flags = " · ".join(x for x in (s["finish_reason"], "degenerate" if s["degenerate"] else None,
                                   f"overall {j['overall']:.2f}" if _score(j) is not None else None) if x)
    scores = " · ".join(f"{escape_text(str(k))} {v:.2f}" for k, v in j.get("scores", {}).items() if isinstance(v, (int, float)))
    return {
        "html": f'<div class="lb-side-head"><strong>{title}</strong> · {escape_text(flags or "corrected text")}</div>'
                f'{render_text_html(s["text"], s["loops"])}'
                f'<div class="lb-scores">{scores}<br>{escape_text(j.get("rationale") or "")}</div>',
        "diff": diff_html(s["text"], reference) if show_diff and reference else "",
        "score": _score(j),
        "candidate_id": s["candidate_id"],
    }


def _candidate(c: dict, chosen_id: str | None, rejected_id: str | None) -> dict:
    """One option of "pick another candidate": what tells it apart, and whether it is a side now."""
    score = _score(c["judgment"])
    role = "chosen" if c["candidate_id"] == chosen_id else "rejected" if c["candidate_id"] == rejected_id else ""
    label = " · ".join(x for x in (f"#{c['sample_index']}", c["finish_reason"] or "?",
                                   "degenerate" if c["degenerate"] else ("loop" if c["has_loop"] else "no loop"),
                                   "not judged" if score is None else f"score {score:.2f}", f"{c['chars'] or 0:,} chars") if x)
    preview = (c["preview"] or "")[:200]
    return {"id": c["candidate_id"], "label_html": escape_text(label), "preview_html": escape_text(preview) + ("…" if len(c["preview"] or "") > 200 else ""),
            "score": score, "role": role}


def pane_pair(v: dict, *, show_diff: bool = False, image: dict | None = None) -> dict:
    """The pane's record of one pair (``pair_view``'s dict): ids and state as data, texts as escaped
    HTML, the candidates to pick from, and the chosen text to correct. ``image``: ``{"src": data URL}``
    or ``{"note": why it is not shown}``, from the page (which knows what it may read)."""
    chosen, rejected = v["chosen"], v["rejected"]
    because = str(v["provenance"].get("rejected_because", "?"))
    text = v["chosen_text"] or ""
    return {
        "id": v["pair_id"],
        "version": v["version"],
        "status": v["status"],
        "second_review": bool(v["second_review"]),
        "title_html": f"Document {escape_text(str(v['item_id']))}",
        "doc_html": render_text_html(v["document"] or "", [], max_chars=6000),
        "image": image or {},
        "has_reference": bool(v["reference"]),
        "diff": bool(show_diff and v["reference"]),
        "chosen": _side("Chosen", chosen, v["reference"], show_diff),
        "rejected": _side("Rejected", rejected, v["reference"], show_diff),
        "footer_html": escape_text(f"pair {v['pair_id']} · v{v['version']} · {v['status']} · rejected because {because}"
                                   + (" · second review" if v["second_review"] and v["status"] != "pending" else "")),
        "candidates": [_candidate(c, chosen["candidate_id"], rejected["candidate_id"]) for c in v["candidates"]],
        "chosen_text": text if len(text) < EDITABLE_CHARS else "",
    }


def reason_html(reason: str | None) -> str:
    """A refusal (it names reviewers and pairs: untrusted) as escaped HTML."""
    return escape_text(reason or "")

