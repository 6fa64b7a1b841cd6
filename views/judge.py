"""Judge: score a sampling run's candidates on a rubric, see the scores against the loop flag, mine pairs."""

import dataclasses

import streamlit as st

from core import jobs
from core.judges.base import DEFAULT_RUBRIC, JudgeConfig
from core.policy.mining import PairPolicy
from core.present.charts import criterion_histograms, score_by_loop
from core.present.render import md_escape
from core.samplers import BACKENDS
from core.steps.judge import judge_summary, start_judging
from core.store.judgments import judgments_frame
from core.steps.pairs import mine_run
from core.store import WorkspaceError
from core.store.models import list_models
from views._ui import checked_base_url, checked_model, dataframe, helps, live_runs_panel, workspace

ws = workspace()
st.title("Judge")
h, hp = helps(JudgeConfig), helps(PairPolicy)
sample_runs = [r["run_id"] for r in jobs.list_runs(ws, "sample") if r["status"] == "done"]
if not sample_runs:
    st.info("No finished sampling run yet: sample candidates on the Sample page first.")
    st.stop()

with st.expander("New judging run", expanded=not jobs.list_runs(ws, "judge", limit=1), icon=":material/add:"):
    with st.form("judge"):
        c1, c2, c3 = st.columns(3)
        source = c1.selectbox("Sampling run", sample_runs)
        judge = c2.selectbox("Judge", ["reference", "llm"], help=h["judge"])
        models = [m["name"] for m in list_models(ws.cursor())]
        judge_model = c3.selectbox("Judge model (llm)", models + ["Other…"], help=h["judge_model"])
        other = c3.text_input("Other judge model: path, hub id or server model name")
        backend = c2.selectbox("Backend (llm)", BACKENDS, help=h["backend"])
        base_url = c1.text_input("Server URL (llm, openai backend)", help=h["base_url"])
        images = c3.selectbox("Show the judge the page (llm)", ["auto", "on", "off"], help=h["images"])
        st.caption("Rubric: criteria scored 0–1; the overall score is their weighted mean.")
        rubric = st.data_editor([dataclasses.asdict(c) for c in DEFAULT_RUBRIC], num_rows="dynamic", width="stretch", key="rubric")
        submitted = st.form_submit_button("Judge", type="primary", icon=":material/gavel:")
    if submitted:
        cfg = JudgeConfig(judge=judge, rubric=[dict(r) for r in rubric if r.get("name")], backend=backend,
                          base_url=base_url.strip() or None, images=images,
                          judge_model=(other.strip() or None) if judge_model == "Other…" else judge_model)
        try:
            if judge == "llm" and judge_model == "Other…" and backend != "openai" and cfg.judge_model:
                cfg.judge_model = checked_model(cfg.judge_model)  # a typed path stays inside the allowed roots
            if cfg.base_url:
                cfg.base_url = checked_base_url(cfg.base_url)
            st.session_state["judge_run"] = start_judging(ws, source, cfg)
        except WorkspaceError as e:
            st.error(md_escape(e, 1000), icon=":material/error:")


live_runs_panel(ws, "judge", "judge_run")
judge_run = st.session_state.get("judge_run") or next(iter(r["run_id"] for r in jobs.list_runs(ws, "judge", limit=1)), None)
if not judge_run:
    st.stop()

CHART_ROWS = 20_000
s = judge_summary(ws, judge_run)
st.subheader(f"Scores of {judge_run}")
c = st.columns(4)
c[0].metric("Judged", f"{s['judged']:,}")
c[1].metric("Judge errors", f"{s['errors']:,}")
c[2].metric("Mean overall", "–" if s["mean_overall"] is None else f"{s['mean_overall']:.3f}")
by = s["overall_by_degenerate"]
c[3].metric("Overall: degenerate / not", " / ".join("–" if by.get(k) is None else f"{by[k]:.2f}" for k in ("true", "false")),
            help="mean overall score of degenerate and of other candidates: a judge that sees loops keeps them apart")
df = judgments_frame(ws, judge_run, sample=CHART_ROWS)  # distributions: a fixed sample draws the same picture
if len(df) and df["overall"].notna().any():
    criteria = [k for k in s["criteria"] if k not in ("quality", "judge_overall")]
    if s["judged"] > CHART_ROWS:
        st.caption(f"Charts: a random sample of {CHART_ROWS:,} of the {s['judged']:,} judgments.")
    left, right = st.columns([3, 1])
    left.plotly_chart(criterion_histograms(df, criteria), width="stretch")
    right.plotly_chart(score_by_loop(df), width="stretch")

st.subheader("Mine pairs")
st.caption("Chosen: the best non-degenerate candidate above the floor that stopped by itself. Rejected: a degenerate candidate first, "
           "else one worse by the margin. Items without a clear gap give no pair.")
c, t = st.columns(3), st.columns(3)
policy = PairPolicy(
    min_chosen=c[0].slider("Quality floor", 0.0, 1.0, PairPolicy.min_chosen, 0.05, help=hp["min_chosen"]),
    min_margin=c[1].slider("Margin", 0.0, 1.0, PairPolicy.min_margin, 0.05, help=hp["min_margin"]),
    max_pairs_per_item=c[2].number_input("Pairs per item", 1, 16, PairPolicy.max_pairs_per_item, help=hp["max_pairs_per_item"]),
    chosen_must_finish=t[0].toggle("Chosen must have stopped by itself", value=PairPolicy.chosen_must_finish,
                                   help=hp["chosen_must_finish"]),
    degenerate_only=t[1].toggle("Degenerate rejected only", help=hp["degenerate_only"]),
    reference_as_chosen=t[2].toggle("Reference as chosen", help=hp["reference_as_chosen"]),
)
preview = mine_run(ws, judge_run, policy, write=False)
c = st.columns(4)
c[0].metric("Pairs", preview["pairs"])
c[1].metric("Items with pairs", f"{preview['items_with_pairs']} / {preview['items']}")
c[2].metric("Rejected = degenerate", preview["rejected_degenerate"])
c[3].metric("Rejected by margin", preview["rejected_margin"])
if preview["no_pair"]:
    dataframe([{"items without a pair": k, "count": v} for k, v in preview["no_pair"].items()], hide_index=True)
if st.button(f"Write {preview['pairs']} pairs as pending", type="primary", disabled=not preview["pairs"], icon=":material/call_split:"):
    done = mine_run(ws, judge_run, policy)
    st.success(f"{done['new']} new pending pairs ({done['pairs'] - done['new']} existed already).")
