"""Evaluate: models × held-out items × fixed decoding, as background jobs; degeneration per family and stage."""

import pandas as pd
import streamlit as st

from core.present import charts
from core.present.render import md_escape
from core.steps.evaluate import EvalConfig, eval_results, loop_shapes, report, start_eval
from core.store.evaluation import degenerate_outputs
from core.store.candidates import get_candidate
from core.store import WorkspaceError
from core.store.items import list_datasets
from core.store.models import list_models
from views._ui import active_runs, attractor_panel, candidate_text, dataframe, helps, live_runs_panel, workspace

ws = workspace()
cur = ws.cursor()
st.title("Evaluate")
st.caption("Degeneration rate with a 95% interval, quality ((Levenshtein ratio + BLEU-4)/2) and lengths, per model, family "
           "and stage, on items no model trained on. Vanilla → SFT → SFT+DPO is DharmaOCR's figure 1, for your models.")
h = helps(EvalConfig)
e = EvalConfig()
models, datasets = list_models(cur), list_datasets(cur)

with st.expander("New evaluation", expanded=not eval_results(ws), icon=":material/add:"):
    with st.form("eval", enter_to_submit=False):
        labels = {f"{m['name']}  ({m['family'] or '?'} · {m['stage'] or '?'})": m["name"] for m in models}
        picked = st.multiselect("Models", list(labels), help=h["models"])
        c1, c2, c3, c4 = st.columns(4)
        dataset = c1.selectbox("Dataset", sorted({x["dataset"] for x in datasets}), help=h["dataset"])
        splits = sorted({x["split"] for x in datasets})
        split = c2.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0, help=h["split"])
        limit = c3.number_input("Limit items (0 = all)", 0, value=0, help=h["limit"])
        max_new = c4.number_input("Max new tokens (0 = the models' own)", 0, 32768, 0, help=h["max_new_tokens"])
        c1, c2, c3, c4 = st.columns(4)
        greedy = c1.checkbox("Greedy decode", e.greedy, help=h["greedy"])
        n_sampled = c2.number_input("Sampled per item", 0, 64, e.n_sampled, help=h["n_sampled"])
        temperature = c3.number_input("Temperature", 0.05, 2.0, e.temperature, step=0.05, help=h["temperature"])
        top_p = c4.number_input("Top-p", 0.05, 1.0, e.top_p, step=0.05, help=h["top_p"])
        submitted = st.form_submit_button("Evaluate", type="primary", icon=":material/play_arrow:")
    if submitted:
        cfg = EvalConfig(models=[labels[p] for p in picked], dataset=dataset or "", split=split, limit=limit or None,
                         greedy=greedy, n_sampled=n_sampled, temperature=temperature, top_p=top_p, max_new_tokens=max_new or None)
        try:
            ids = start_eval(ws, cfg)
            st.toast(f"Started {len(ids)} evaluation run(s); they run one after another", icon=":material/play_arrow:")
        except WorkspaceError as err:
            st.error(md_escape(err, 1000), icon=":material/error:")


with st.expander("Evaluation runs", icon=":material/list:", expanded=active_runs(ws, "eval")):
    live_runs_panel(ws, "eval", "eval_run")

rows = eval_results(ws)
if not rows:
    if active_runs(ws, "eval"):
        st.info("Evaluation runs are queued or running: the results appear here as each finishes "
                "(the runs panel above shows their progress).", icon=":material/hourglass_top:")
    else:
        st.info("No evaluation results yet: pick models above (e.g. each family's vanilla, SFT and DPO stage) and evaluate.",
                icon=":material/query_stats:")
    st.stop()

c1, c2, c3 = st.columns(3)
keys = sorted({(r["dataset"], r["split"]) for r in rows}, key=lambda k: (k[0], k[1] != "test", k[1]))
dataset, split = c1.selectbox("Results on", keys, format_func=lambda k: f"{k[0]} / {k[1]}")
decodings = sorted({r["decoding"] for r in rows if (r["dataset"], r["split"]) == (dataset, split)})
decoding = c2.radio("Decoding", decodings, horizontal=True)
rep = report(ws, dataset, split, decoding)
if rep["mean_dpo_reduction"] is not None:
    if rep["weak_evidence"]:  # no bold number that the data does not support
        c3.markdown(f"**SFT → SFT+DPO: not enough evidence yet**  \n{rep['weak_evidence']}; the per-family intervals below say more.")
    else:
        c3.metric("Mean reduction of degeneration, SFT → SFT+DPO", f"{100 * rep['mean_dpo_reduction']:.1f}%",
                  help="mean over families of 1 − rate(DPO) / rate(SFT); each family's interval is in the chart and the table")

if not rep["families"]:
    st.info("No finished run for this selection yet.")
    st.stop()

st.subheader("Degeneration by family and stage")
fig = charts.family_stage_bars(rep)
event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="bars", width="stretch")
st.caption("Bars: share of outputs that looped to the limit; whiskers: Wilson 95% interval. Above each family: DPO's relative "
           "change against SFT with a bootstrap interval over items. Click a bar to open that model's degenerate outputs below.")

table = pd.DataFrame([{
    "family": fam, "stage": r["stage_label"], "model": r["model"], "degenerate": f"{r['degenerate']}/{r['candidates']}",
    "rate %": round(100 * r["rate"], 2), "95% CI %": f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}",
    "quality": r["quality"], "quality (clean)": r["quality_clean"], "mean tokens": r["mean_tokens"],
    "EOS": r["stop"], "limit": r["length"], "loop stop": r["repetition"], "run": r["run_id"],
} for fam, f in rep["families"].items() for r in f["stages"]])
dataframe(table, hide_index=True, width="stretch")
reds = [{"family": fam, "stage": x["label"], "SFT rate %": round(100 * x["sft_rate"], 2), "rate %": round(100 * x["rate"], 2),
         "reduction %": None if x["reduction"] is None else round(100 * x["reduction"], 1),
         "95% CI %": "" if not x.get("ci95") else f"{100 * x['ci95'][0]:.0f} … {100 * x['ci95'][1]:.0f}",
         "items": x["n_items"], "intervals overlap": x["overlap"]}
        for fam, f in rep["families"].items() for x in f["reductions"]]
if reds:
    dataframe(pd.DataFrame(reds), hide_index=True, width="stretch")

shown = [r for f in rep["families"].values() for r in f["stages"]]
t1, t2, t3, t4 = st.tabs(["Degenerate outputs", "Quality vs degeneration", "Loop shapes", "Finish reasons"])
with t2:
    st.plotly_chart(charts.quality_vs_degeneration(shown), width="stretch")
with t3:
    shapes = loop_shapes(ws, [r["run_id"] for r in shown])
    if shapes:
        st.plotly_chart(charts.loop_histograms(shapes), width="stretch")
    else:
        st.info("No degenerate outputs in these runs.")
with t4:
    st.plotly_chart(charts.finish_reasons(shown), width="stretch")
with t1:
    options = {f"{r['model']} ({r['family']} · {r['stage_label']}) · {r['degenerate']} degenerate": r for r in shown}
    points = event.selection.points if event and event.selection else []
    if points:  # a clicked bar: its family (x) and stage (the trace's name)
        p = points[0]
        trace = fig.data[p["curve_number"]].name
        hit = next((k for k, r in options.items()  # the figure's labels are escaped (charts.plain)
                    if charts.plain(r["family"]) == p["x"] and charts.plain(r["stage_label"]) == trace), None)
        if hit:
            st.session_state["eval_pick"] = hit
    if st.session_state.get("eval_pick") not in options:  # start with the model that looped most
        st.session_state["eval_pick"] = max(options, key=lambda k: options[k]["degenerate"])
    pick = st.selectbox("Model", list(options), key="eval_pick")
    outs = degenerate_outputs(ws, options[pick]["run_id"])
    if not outs:
        st.success("No degenerate output in this run.", icon=":material/check:")
    else:
        d = pd.DataFrame(outs)
        sel = dataframe(d, hide_index=True, on_select="rerun", selection_mode="single-row", key="eval_outs", width="stretch")
        chosen = sel.selection.rows if sel else []
        cand = get_candidate(ws, d.iloc[chosen[0] if chosen else 0]["candidate_id"])
        st.caption(f"{md_escape(cand['item_id'])} · {cand['finish_reason']} · {cand['n_tokens']} tokens · quality "
                   f"{'–' if cand.get('quality') is None else round(cand['quality'], 3)}")
        candidate_text(ws, cand)
        attractor_panel(ws, cand, "evaluate")
