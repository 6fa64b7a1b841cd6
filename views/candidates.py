"""Candidates: every candidate of a run in a table with filters; a selected one shows its folded loops and all its judgments."""

from html import escape

import streamlit as st

from core.present.render import md_escape
from core.review.browse import candidate_judgments, candidate_runs, candidates_frame
from core.store.candidates import get_candidate
from views._ui import attractor_panel, candidate_text, dataframe, workspace

ws = workspace()
st.title("Candidates")
runs = candidate_runs(ws)
if not runs:
    st.info("No candidates yet: sample a run on the Sample page first.", icon=":material/casino:")
    st.stop()

c = st.columns([2, 1, 2, 2, 2])
run = c[0].selectbox("Run", runs)
loop = c[1].selectbox("Loop", ["any", "looped", "no loop"])
reasons = c[2].multiselect("Finish reason", ["stop", "length", "repetition"])
score = c[3].slider("Overall score", 0.0, 1.0, (0.0, 1.0), 0.05)
max_chars = c[4].number_input("Longest text (chars, 0 = any)", 0, 10_000_000, 0, step=1000)
df = candidates_frame(ws, run, has_loop={"any": None, "looped": True, "no loop": False}[loop], finish_reasons=reasons or None,
                      score=score, chars=(0, max_chars) if max_chars else None)
st.caption(f"{len(df):,} candidates" + (" (first 2,000)" if len(df) == 2000 else ""))
event = dataframe(df, hide_index=True, on_select="rerun", selection_mode="single-row", key="cands", width="stretch")
rows = event.selection.rows if event else []
if not rows:
    st.stop()
cand = get_candidate(ws, df.iloc[rows[0]]["candidate_id"])
st.subheader(f"{md_escape(cand['item_id'])} · candidate {cand['sample_index']}", anchor=False)
st.caption(f"{cand['finish_reason']} · {'degenerate' if cand['degenerate'] else 'not degenerate'} · {cand['n_tokens']} tokens · "
           f"{len(cand['text']):,} chars")
candidate_text(ws, cand)
attractor_panel(ws, cand, "candidates")
for j in candidate_judgments(ws, cand["candidate_id"]):
    scores = " · ".join(f"{escape(str(k))} {v:.2f}" for k, v in j["scores"].items() if isinstance(v, (int, float)))
    overall = "–" if j["overall"] is None else f"{j['overall']:.3f}"
    st.html(f'<div style="font-size:0.85rem"><b>{escape(j["judge_run"])}</b> ({escape(j["judge"])}) overall {overall}'
            f'<br>{scores}<br><i>{escape(j["rationale"] or j["error"] or "")}</i></div>')
