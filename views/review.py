"""Review: decide the mined pairs, one keystroke each. The pair pane is a fragment, so a decision reruns only it."""

from html import escape

import streamlit as st

from core.present.diff import diff_html
from core.present.render import md_escape, render_text_html
from core.review.agreement import agreement, bulk, progress, send_to_second_review
from core.review.decisions import Conflict, decide, last_decided_pair
from core.review.queue import QueueFilter, families_and_stages, next_pair, pair_runs, pair_view
from core.store import WorkspaceError
from views._ui import helps, show_image, workspace

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


def act(action: str, pair_id: str, version: int, **kw) -> None:
    """Button callback: runs before the fragment redraws, so the next pair shows in the same rerun."""
    st.session_state.pop("conflict", None)
    try:
        decide(ws, pair_id, action, reviewer, version, **kw)
        st.session_state["pinned"] = pair_id if action.startswith(("pick", "edit")) else None
    except Conflict as e:
        if e.last and e.last["reviewer"] == reviewer and e.current["status"] != "pending" and action == e.last["action"]:
            return  # the same key pressed twice on a pair already decided: nothing to choose
        st.session_state["pinned"], st.session_state["conflict"] = pair_id, str(e)
    except WorkspaceError as e:
        st.session_state["error"] = str(e)


def undo() -> None:
    pair_id = last_decided_pair(ws, reviewer)
    if pair_id is None:
        st.session_state["error"] = "Nothing of yours to undo."
        return
    act("undo", pair_id, pair_view(ws, pair_id)["version"])
    st.session_state["pinned"] = pair_id


def side(col, title: str, s: dict, reference: str | None, show_diff: bool) -> None:
    """One side of the pair as a single HTML block (fewer elements, faster redraws); every text in it escaped."""
    j = s["judgment"] or {}
    flags = " · ".join(x for x in (s["finish_reason"], "degenerate" if s["degenerate"] else None,
                                   f"overall {j['overall']:.2f}" if j.get("overall") is not None else None) if x)
    scores = " · ".join(f"{escape(str(k))} {v:.2f}" for k, v in j.get("scores", {}).items() if isinstance(v, (int, float)))
    diff = diff_html(s["text"], reference) if show_diff and reference else ""
    col.html(f'<div><strong>{title}</strong> · {escape(flags or "corrected text")}</div>{render_text_html(s["text"], s["loops"])}'
             f'<div style="font-size:0.8rem;color:#666">{scores}<br>{escape(j.get("rationale") or "")}</div>{diff}')


@st.fragment
def pane() -> None:
    p = progress(ws, flt.run)
    mine = p["per_reviewer"].get(reviewer, 0)
    others = ", ".join(f"{md(k)} {v}" for k, v in p["per_reviewer"].items() if k != reviewer)
    st.progress(p["done"] / p["total"] if p["total"] else 0.0,
                text=f"{p['done']} done · {p['left']} left · you {mine}" + (f" · {others}" if others else ""))
    if err := st.session_state.pop("error", None):
        st.error(md(err), icon=":material/error:")
    pair_id = st.session_state.get("pinned") or next_pair(ws, flt, reviewer)
    if pair_id is None:
        st.success("Nothing left in this queue.", icon=":material/done_all:")
        st.button("Undo my last decision", shortcut=KEYS["undo"], on_click=undo, icon=":material/undo:")
        return
    v = pair_view(ws, pair_id)
    if conflict := st.session_state.get("conflict"):
        st.warning(f"{md(conflict)}. Below is its current state ({v['status']}).", icon=":material/sync_problem:")
        st.button("Keep theirs and go on", on_click=lambda: st.session_state.update(pinned=None, conflict=None))
    b = st.columns(5)
    args = (pair_id, v["version"])
    b[0].button("Approve", shortcut=KEYS["approve"], on_click=act, args=("approve", *args), type="primary", icon=":material/check:", width="stretch")
    b[1].button("Swap", shortcut=KEYS["swap"], on_click=act, args=("swap", *args), icon=":material/swap_horiz:", width="stretch",
                help="swap chosen and rejected, and approve")
    b[2].button("Reject pair", shortcut=KEYS["reject"], on_click=act, args=("reject", *args), icon=":material/block:", width="stretch")
    b[3].button("Skip", shortcut=KEYS["skip"], on_click=act, args=("skip", *args), icon=":material/skip_next:", width="stretch")
    b[4].button("Undo", shortcut=KEYS["undo"], on_click=undo, icon=":material/undo:", width="stretch")
    with st.expander(f"Document {md(v['item_id'])}", expanded=True):
        d1, d2 = st.columns([3, 2]) if v["image_path"] else (st.container(), None)
        d1.html(render_text_html(v["document"] or "", [], max_chars=6000))
        if d2 is not None:
            show_image(d2, v["image_path"], ws)
    show_diff = st.toggle("Diff against the reference", key="diff", disabled=not v["reference"])
    left, right = st.columns(2)
    side(left, "Chosen", v["chosen"], v["reference"], show_diff)
    side(right, "Rejected", v["rejected"], v["reference"], show_diff)
    # Last, so that once the id shows, the whole pair (and the buttons' target) has been redrawn.
    st.html(f'<div class="lb-pair-id" style="font-family:monospace;font-size:0.8rem">pair {escape(pair_id)} · v{v["version"]} · '
            f'{escape(v["status"])} · rejected because {escape(str(v["provenance"].get("rejected_because", "?")))}'
            f'{" · second review" if v["second_review"] and v["status"] != "pending" else ""}</div>')
    if st.toggle("Pick another candidate, or correct the chosen", key="more"):  # drawn only on demand: keeps each pair fast
        labels = {c["candidate_id"]: f"#{c['sample_index']} · {c['finish_reason']}{' · degenerate' if c['degenerate'] else ''} · {c['chars']:,} chars"
                  for c in v["candidates"]}
        pick = st.selectbox("Candidate", list(labels), format_func=labels.get, key=f"pick-{pair_id}")
        c1, c2, c3 = st.columns(3)
        c1.button("Use as chosen", on_click=act, args=("pick_chosen", *args), kwargs={"chosen_candidate_id": pick})
        c2.button("Use as rejected", on_click=act, args=("pick_rejected", *args), kwargs={"rejected_candidate_id": pick})
        text = st.text_area("Corrected chosen", value=v["chosen_text"] if len(v["chosen_text"] or "") < 20000 else "", key=f"edit-{pair_id}")
        c3.button("Save corrected chosen", on_click=act, args=("edit_chosen", *args), kwargs={"chosen_text": text})


pane()
st.caption("Keys: " + " · ".join(f"**{k}** {a}" for a, k in KEYS.items()) + " — swap approves the swapped pair.")

with st.expander("Agreement, bulk decisions, second review", icon=":material/insights:"):
    a = agreement(ws, flt.run)
    c = st.columns(4)
    c[0].metric("Decided", a["decided"])
    c[1].metric("Judge overridden", "–" if a["override_rate"] is None else f"{a['override_rate']:.0%}")
    c[2].metric("Reviewed twice", a["reviewed_twice"])
    c[3].metric("Reviewer agreement", "–" if a["reviewer_agreement"] is None else f"{a['reviewer_agreement']:.0%}")
    if a["outcomes"]:
        st.caption("How humans decided: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in a["outcomes"].items()))
    if a["per_criterion"]:
        st.dataframe([{"criterion": k, "pairs": x["pairs"], "judge prefers the human's chosen": round(x["judge_agrees"], 3)}
                      for k, x in a["per_criterion"].items()], hide_index=True)
    c1, c2 = st.columns(2)
    sure = c1.checkbox("I checked the filter above: decide every pending pair it matches")
    for col, action in ((c1, "approve"), (c2, "reject")):
        if col.button(f"{action.capitalize()} all matching", disabled=not sure, key=f"bulk-{action}"):
            s = bulk(ws, flt, action, reviewer)
            st.success(f"{s['decided']} of {s['matched']} pairs decided ({action}) as {md(reviewer)}.")
    share = c2.slider("Share sent to a second reviewer", 0.0, 1.0, 0.1, 0.05)
    if c2.button("Send to second review"):
        st.success(f"{send_to_second_review(ws, flt.run, share)} pairs will be shown to a second reviewer once decided.")
