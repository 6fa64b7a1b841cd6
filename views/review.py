"""Review: decide the mined pairs, one keystroke each. The pair pane is a browser component that holds
the next pairs (views/review_pane.js): a key shows the next pair at once, and the decision goes to
the server behind it, where this fragment applies it (once, by its id) and refills the queue."""

import base64
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import streamlit as st

from core.access import AccessDenied, check_path
from core.present.pane import pane_pair, reason_html
from core.present.render import escape_text, md_escape
from core.review.agreement import agreement, bulk, progress, send_to_second_review
from core.review.decisions import apply_decisions
from core.review.queue import QueueFilter, claim_queue, families_and_stages, pair_runs, pair_view
from core.store import WorkspaceError
from views._pane import PANE
from views._ui import allowed_roots, dataframe, helps, workspace

ws = workspace()
st.title("Review")
h = helps(QueueFilter)
KEYS = {"approve": "A", "swap": "S", "reject": "X", "skip": "K", "undo": "U"}


def md(text) -> str:
    """Document-derived ids and names inside Markdown labels: every Markdown character backslash-escaped."""
    return md_escape(text)


def login_name() -> str:
    """The login's email (what allowed_reviewers lists; stable across sessions), else its name; "" without a login."""
    try:
        return (st.user.get("email") or st.user.get("name") or "") if st.user.is_logged_in else ""
    except Exception:  # auth not configured
        return ""


def remember_reviewer() -> None:
    st.query_params["reviewer"] = st.session_state["reviewer"]


with st.sidebar:
    if login_name():  # the login decides who decides: neither a typed name nor ?reviewer= can override it
        st.session_state["reviewer"] = login_name()
    elif "reviewer" not in st.session_state:
        st.session_state["reviewer"] = st.query_params.get("reviewer", "")
    st.text_input("Reviewer", key="reviewer", on_change=remember_reviewer, disabled=bool(login_name()),
                  help="recorded with every decision; from your login when there is one, else remembered in the page address")
reviewer = st.session_state["reviewer"].strip()
runs = pair_runs(ws) if reviewer else []
if not reviewer:
    st.info("Type your name under **Reviewer** in the sidebar: every decision is recorded with it.", icon=":material/badge:")
    st.stop()
if not runs:
    st.info("No pairs yet: mine pairs on the Judge page first.", icon=":material/call_split:")
    st.stop()

families, stages = families_and_stages(ws)
c = st.columns([2, 1.2, 1.2, 1, 1])
t = st.columns([1.6, 1.6, 1.2, 2.6])
flt = QueueFilter(
    run=c[0].selectbox("Run", list(runs), help=h["run"], format_func=lambda r: f"{r} · {runs[r]:,} pending"),
    status=c[1].selectbox("Queue", ["pending", "approved", "rejected", "any"], help=h["status"]),
    reviewer=c[2].text_input("Decided by", help=h["reviewer"]) or None,
    family=c[3].selectbox("Family", [None, *families], help=h["family"], format_func=lambda x: x or "any"),
    stage=c[4].selectbox("Stage", [None, *stages], help=h["stage"], format_func=lambda x: x or "any"),
    degenerate_only=t[0].toggle("Degenerate rejected", help=h["degenerate_only"]),
    close_calls=t[1].toggle("Judge close calls", help=h["close_calls"]),
    overridden=t[2].toggle("Overridden", help=h["overridden"]),
)


BUFFER = 8  # pairs the browser keeps ready: a reviewer never waits for the server between two of them
SCOPE = hashlib.sha256(f"{ws.root.resolve()}\0{reviewer}".encode()).hexdigest()[:16]  # the outbox's key in the browser


@st.cache_data(max_entries=64, show_spinner=False)
def page_image(path: str, root: str) -> dict:
    """The page as a data URL the pane can show (scaled to about a megapixel, JPEG), or why not; on a
    shared app only from inside the allowed roots or the workspace, as everywhere."""
    from core.images import ImageProblem, load_image

    try:
        if (roots := allowed_roots()) is not None:
            check_path(path, [*roots, Path(root)], "image")
        img = load_image(path, max_pixels=1_000_000)
    except AccessDenied:
        return {"note": "image outside the folders this app may read: not shown"}
    except (ImageProblem, WorkspaceError, OSError):
        return {"note": "image not readable"}
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return {"src": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")}


def _noop() -> None:
    """State changes of the pane rerun the fragment; what changed is read from its state."""


@st.fragment
def pane() -> None:
    """Apply what the browser decided, claim the next pairs, send the pairs it lacks. Each pair is
    rendered once per version (and diff setting) per session; the browser keeps the rest."""
    state = st.session_state.get("lb_review_pane") or {}
    applied, sent = st.session_state.setdefault("lb_applied", {}), st.session_state.setdefault("lb_sent", {})
    outbox = [d for d in (state.get("outbox") or []) if isinstance(d, dict) and d.get("id")]
    if new := [d for d in outbox if d["id"] not in applied]:
        for r in apply_decisions(ws, reviewer, new):
            applied[r["id"]] = r
    acks = [{"id": r["id"], "pair_id": r["pair_id"], "ok": r["ok"], "reason_html": reason_html(r["reason"])}
            for r in (applied[d["id"]] for d in outbox if d["id"] in applied)]
    order = claim_queue(ws, flt, reviewer, BUFFER)
    show_diff = bool(state.get("diff"))
    missing = tuple(state.get("missing") or ())
    force = {a["pair_id"] for a in acks if not a["ok"] and a["pair_id"]}
    if missing and st.session_state.get("lb_missing") != missing:
        st.session_state["lb_missing"] = missing
        force |= set(missing)
    views = {}
    for pair_id, version in [*order, *((p, None) for p in force)]:
        if pair_id in views or (pair_id not in force and sent.get(pair_id) == (version, show_diff)):
            continue
        if (v := pair_view(ws, pair_id)) is None:
            continue
        views[pair_id] = pane_pair(v, show_diff=show_diff, image=page_image(v["image_path"], str(ws.root.resolve())) if v["image_path"] else None)
        sent[pair_id] = (v["version"], show_diff)
    p = progress(ws, flt.run)
    others = ", ".join(f"{escape_text(k)} {n}" for k, n in p["per_reviewer"].items() if k != reviewer)
    PANE(key="lb_review_pane", default={"outbox": [], "missing": [], "diff": False},
         on_outbox_change=_noop, on_missing_change=_noop, on_diff_change=_noop,
         data={"scope": SCOPE, "reviewer": reviewer, "queue": json.dumps(dataclasses.asdict(flt), sort_keys=True),
               "order": [pid for pid, _ in order], "views": views, "acks": acks,
               "empty": not order, "diff": show_diff,
               "progress": {"done": p["done"], "left": p["left"], "total": p["total"],
                            "you": p["per_reviewer"].get(reviewer, 0), "others_html": others}})
    st.caption("Keys, wherever the focus is (except in a text box): " + " · ".join(f"**{k}** {a}" for a, k in KEYS.items())
               + " — swap approves the swapped pair. Each decision is shown made at once and stored behind it.")
    panel(p)


def panel(p: dict) -> None:
    """Agreement, bulk decisions and second review, computed only while open; its counts are the pane's."""
    box = st.expander("Agreement, bulk decisions, second review", icon=":material/insights:", key="lb_panel", on_change="rerun")
    if not box.open:
        return
    with box:
        a = agreement(ws, flt.run)
        c = st.columns(4)
        c[0].metric("Decided", p["done"], help="pairs approved or rejected (the pane's done)")
        c[1].metric("Judge overridden", "–" if a["override_rate"] is None else f"{a['override_rate']:.0%}")
        c[2].metric("Reviewed twice", a["reviewed_twice"])
        c[3].metric("Reviewer agreement", "–" if a["reviewer_agreement"] is None else f"{a['reviewer_agreement']:.0%}")
        if a["outcomes"]:
            st.caption("How humans decided: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in a["outcomes"].items()))
        if a["per_criterion"]:
            dataframe([{"criterion": k, "pairs": x["pairs"], "judge prefers the human's chosen": round(x["judge_agrees"], 3)}
                          for k, x in a["per_criterion"].items()], hide_index=True)
        if msg := st.session_state.pop("lb_bulk", None):
            st.success(msg)
        c1, c2 = st.columns(2)
        sure = c1.checkbox("I checked the filter above: decide every pending pair it matches")
        for col, action in ((c1, "approve"), (c2, "reject")):
            if col.button(f"{action.capitalize()} all matching", disabled=not sure, key=f"bulk-{action}"):
                s = bulk(ws, flt, action, reviewer)
                st.session_state["lb_bulk"] = f"{s['decided']} of {s['matched']} pairs decided ({action}) as {md(reviewer)}."
                st.rerun(scope="fragment")
        share = c2.slider("Share sent to a second reviewer", 0.0, 1.0, 0.1, 0.05)
        if c2.button("Send to second review"):
            st.success(f"{send_to_second_review(ws, flt.run, share)} pairs will be shown to a second reviewer once decided.")


pane()
