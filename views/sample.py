"""Sample: N candidates per item from a model, as a background job; loops flagged as they arrive."""

import streamlit as st

from core import jobs
from core.present.render import md_escape
from core.images import DEFAULT_MAX_PIXELS
from core.samplers import BACKENDS
from core.samplers.base import DecodingConfig
from core.steps.sample import SampleConfig, run_summary, start_sampling
from core.store.candidates import get_candidate, list_candidates
from core.store import WorkspaceError
from core.store.items import list_datasets
from core.store.models import list_models
from views._ui import (
    active_runs,
    attractor_panel,
    candidate_text,
    checked_base_url,
    checked_model,
    dataframe,
    helps,
    live_runs_panel,
    workspace,
)

ws = workspace()
cur = ws.cursor()
FIRST_LIMIT = 50
st.title("Sample")
h, hd = helps(SampleConfig), helps(DecodingConfig)
d = DecodingConfig()

datasets = list_datasets(cur)
models = list_models(cur)
with st.expander("New sampling run", expanded=not jobs.list_runs(ws, "sample", limit=1), icon=":material/add:"):
    # Enter in a field does not start a run (it did, twice, for a newcomer): only the button does.
    with st.form("sample", enter_to_submit=False):
        c1, c2, c3 = st.columns(3)
        labels = [f"{m['name']}  ({m['family'] or '?'} · {m['stage'] or '?'})" for m in models] + ["Other: a path or hub id"]
        # The method mines the SFT model's own failures: an SFT-stage model first, not a vanilla one.
        sft = next((i for i, m in enumerate(models) if m["stage"] == "sft"), 0)
        pick = c1.selectbox("Model", labels, index=sft, help=h["model"])
        other = c1.text_input("Path or hub id", help="used when the model is 'Other'")
        names = sorted({x["dataset"] for x in datasets})
        dataset = c2.selectbox("Dataset", names, help=h["dataset"])
        splits = ["(all)"] + sorted({x["split"] for x in datasets})
        split = c2.selectbox("Split", splits, index=splits.index("train") if "train" in splits else 0,
                             help=h["split"] + " Pairs are mined on train; validation and test stay held out for evaluation.")
        limit = c3.number_input("Limit items (0 = all)", 0, value=FIRST_LIMIT, help=h["limit"] + f" A first run: {FIRST_LIMIT} items, to see the loops before sampling everything.")
        backend = c3.selectbox("Backend", BACKENDS, help=h["backend"])
        base_url = c3.text_input("Server URL (openai backend)", help=h["base_url"])
        c1, c2, c3, c4 = st.columns(4)
        n = c1.number_input("Candidates per item", 0, 64, d.n, help=hd["n"])
        temperature = c2.number_input("Temperature", 0.05, 2.0, d.temperature, step=0.05, help=hd["temperature"])
        top_p = c3.number_input("Top-p", 0.05, 1.0, d.top_p, step=0.05, help=hd["top_p"])
        top_k = c4.number_input("Top-k", 0, 1000, d.top_k, help=hd["top_k"])
        max_new = c1.number_input("Max new tokens", 1, 32768, d.max_new_tokens, help=hd["max_new_tokens"])
        seed = c2.number_input("Seed", 0, 2**31 - 1, d.seed, help=hd["seed"])
        greedy = c3.checkbox("Add the greedy decode", d.with_greedy, help=hd["with_greedy"])
        early = c4.checkbox("Loop-aware early stop", d.early_stop, help=hd["early_stop"])
        c1, c2, c3, c4 = st.columns(4)
        images = c1.selectbox("Page images", ["auto", "on", "off"], help=h["images"])
        max_pixels = c2.number_input("Max pixels per page", 1024, 50_000_000, DEFAULT_MAX_PIXELS, step=100_000, help=h["max_pixels"])
        endpoint = c3.selectbox("Endpoint (openai backend)", ["auto", "completions", "chat"], help=h["endpoint"])
        st.caption("vLLM engine (GPU machines)")
        c1, c2, c3, c4, c5 = st.columns(5)
        tp = c1.number_input("Tensor parallel", 1, 64, 1, help=h["tensor_parallel_size"])
        dp = c2.number_input("Data parallel", 1, 64, 1, help=h["data_parallel_size"])
        gpu_mem = c3.number_input("GPU memory share", 0.05, 1.0, 0.9, step=0.05, help=h["gpu_memory_utilization"])
        max_len = c4.number_input("Max model length (0 = model's)", 0, 1_048_576, 0, help=h["max_model_len"])
        min_pixels = c5.number_input("Min pixels (0 = processor's)", 0, 50_000_000, 0, help=h["min_pixels"])
        submitted = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")
    if submitted:
        model = other.strip() if pick == labels[-1] else models[labels.index(pick)]["name"]
        cfg = SampleConfig(
            model=model, dataset=dataset or "", split=None if split == "(all)" else split, limit=limit or None,
            backend=backend, base_url=base_url.strip() or None, images=images, max_pixels=int(max_pixels), endpoint=endpoint,
            tensor_parallel_size=int(tp), data_parallel_size=int(dp), gpu_memory_utilization=float(gpu_mem),
            max_model_len=int(max_len) or None, min_pixels=int(min_pixels) or None,
            decoding=DecodingConfig(n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new,
                                    seed=seed, with_greedy=greedy, early_stop=early),
        )
        try:
            if pick == labels[-1]:  # a typed path must stay inside the allowed roots of a shared app
                cfg.model = checked_model(cfg.model)
            if cfg.base_url:
                cfg.base_url = checked_base_url(cfg.base_url)
            st.session_state["sample_run"] = start_sampling(ws, cfg)
            st.toast(f"Started {st.session_state['sample_run']}", icon=":material/play_arrow:")
        except WorkspaceError as e:
            st.error(md_escape(e, 1000), icon=":material/error:")


live_runs_panel(ws, "sample", "sample_run")


def run_view(run_id: str):
    """The run's candidates as they arrive, each with its loop flag; a selection shows the folded loops."""
    s = run_summary(ws, run_id)
    st.subheader(f"Candidates of {run_id}")
    cols = st.columns(5)
    cols[0].metric("Candidates", f"{s['candidates']:,}")
    cols[1].metric("Items", f"{s['items']:,}")
    cols[2].metric("Degenerate", f"{s['degenerate']:,}", help="stopped at the limit with a loop at the tail")
    cols[3].metric("Degeneration rate", f"{s['degeneration_rate']:.1%}")
    cols[4].metric("Mean tokens", s["mean_tokens"])
    st.caption("Finish reasons: " + (", ".join(f"{k} {v:,}" for k, v in s["finish_reasons"].items()) or "none yet"))
    for w in s["warnings"]:
        st.warning(md_escape(w, 500), icon=":material/warning:")
    if s["skipped"]:
        with st.expander(f"{len(s['skipped'])} items skipped", icon=":material/warning:"):
            dataframe([{"item": k, "reason": v} for k, v in s["skipped"].items()], hide_index=True)
    only = st.toggle("Degenerate only", key="only_degenerate")
    table = list_candidates(ws, run_id, only_degenerate=only)
    event = dataframe(table, hide_index=True, width="stretch", height=300, on_select="rerun",
                         column_order=[c for c in table.columns if c != "candidate_id"],
                         selection_mode="single-row", key=f"candidates-{run_id}")
    if not event.selection.rows:
        st.caption("Select a candidate to see its text with the loops highlighted and folded.")
        return
    cand = get_candidate(ws, table.iloc[event.selection.rows[0]]["candidate_id"])
    verdict = "degenerate" if cand["degenerate"] else "loop inside" if cand["has_loop"] else "clean"
    st.markdown(f"**{md_escape(cand['item_id'])}** · candidate {cand['sample_index']} · {cand['finish_reason']} · "
                f"{cand['n_tokens']} tokens · **{verdict}**")
    candidate_text(ws, cand)
    st.caption("Metrics: " + ", ".join(f"{k} {v}" for k, v in cand["metrics"].items()))
    attractor_panel(ws, cand, "sample")


run_id = st.session_state.get("sample_run") or next((r["run_id"] for r in jobs.list_runs(ws, "sample", limit=1)), None)
if run_id:
    st.fragment(run_view, run_every=2 if active_runs(ws, "sample") else None)(run_id)  # refreshes only while candidates arrive
