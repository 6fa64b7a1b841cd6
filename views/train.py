"""Train: a DPO (or SFT) stage on the approved pairs as a background job, with live charts and warnings."""

import streamlit as st

from core import jobs
from core.present.charts import training_curves
from core.present.render import md_escape
from core.steps.train import DPO_LOSSES, DPORunConfig, SFTRunConfig
from core.steps.train_job import TrainJobConfig, pair_sources, read_metrics, start_training, suggested_learning_rate, training_summary
from core.store import WorkspaceError
from core.store.items import list_datasets
from core.store.models import list_models
from views._ui import checked_path, helps, live_runs_panel, workspace

ws = workspace()
cur = ws.cursor()
st.title("Train")
hd, hs, hj = helps(DPORunConfig), helps(SFTRunConfig), helps(TrainJobConfig)
models = [m for m in list_models(cur)]
sources = pair_sources(ws)

with st.expander("New training run", expanded=not jobs.list_runs(ws, "train", limit=1), icon=":material/add:"):
    method = st.segmented_control("Method", ["dpo", "sft"], default="dpo", format_func=str.upper, key="train_method",
                                  help=hj["method"]) or "dpo"
    d = DPORunConfig() if method == "dpo" else SFTRunConfig()
    h = hd if method == "dpo" else hs
    # The pairs first, outside the form: the base follows them (the model that sampled them: on-policy pairs).
    src_labels = [s["label"] for s in sources] + ["Other: an export file or folder"]
    src = st.selectbox("Approved pairs", src_labels, help=hj["pairs"], key="train_pairs")
    sampled_by = sources[src_labels.index(src)].get("model") if src != src_labels[-1] else None
    labels = [f"{m['name']}  ({m['family'] or '?'} · {m['stage'] or '?'})" for m in models] + ["Other: a local model folder"]
    default_base = next((i for i, m in enumerate(models) if m["name"] == sampled_by),
                        next((i for i, m in enumerate(models) if m["stage"] == "sft"), 0))
    base_pick = st.selectbox("Base model", labels, index=default_base, key=f"train_base-{src}",
                             help=hj["base"] + " Defaults to the model that sampled the pairs: DPO wants pairs from its own policy.")
    lr = suggested_learning_rate(models[labels.index(base_pick)]["path"] if base_pick != labels[-1] else None, method)
    with st.form("train", enter_to_submit=False):
        c1, c2, c3 = st.columns(3)
        pick = base_pick
        other = c1.text_input("Model folder", help="used when the base is 'Other'")
        sft_source = "chosen"
        if method == "sft":
            sft_source = c2.radio("Train on", ["chosen", "references"], horizontal=True, help=hj["sft_source"])
        src_other = c2.text_input("Export path", help="used when the pairs are 'Other'")
        dataset = None
        if method == "sft":
            dataset = c2.selectbox("Dataset (references)", sorted({x["dataset"] for x in list_datasets(cur)}) or [None])
        name = c3.text_input("Register as", help=hj["name"], placeholder="the run id")
        use_lora = c3.toggle("LoRA", d.use_lora, help=h["use_lora"])
        lora_r = c3.number_input("LoRA rank", 1, 256, d.lora_r, help=h["lora_r"])
        c1, c2, c3, c4 = st.columns(4)
        params: dict = {}
        if method == "dpo":
            params["loss"] = c1.selectbox("Loss", list(DPO_LOSSES), index=list(DPO_LOSSES).index(d.loss), help=h["loss"])
            params["beta"] = c2.number_input("β", 0.001, 10.0, d.beta, step=0.05, format="%.3f", help=h["beta"])
            params["rpo_weight"] = c3.number_input("RPO SFT weight", 0.0, 10.0, d.rpo_weight, step=0.1, help=h["rpo_weight"])
            params["precompute_ref_log_probs"] = c4.checkbox("Precompute reference", d.precompute_ref_log_probs,
                                                             help=h["precompute_ref_log_probs"])
            params["merge_lora"] = c4.checkbox("Merge LoRA when saving", d.merge_lora, help=h["merge_lora"])
            params["save_steps"] = c4.number_input("Checkpoint every (steps)", 0, 100000, d.save_steps, help=h["save_steps"])
        params["learning_rate"] = c1.number_input("Learning rate", 1e-8, 1.0, lr or d.learning_rate, format="%.1e", key=f"train_lr-{base_pick}-{method}",
                                                  help=h["learning_rate"] + (f" Suggested for this model: {lr:.0e}." if lr else ""))
        params["num_train_epochs"] = c2.number_input("Epochs", 0.1, 100.0, float(d.num_train_epochs), step=0.5, help=h["num_train_epochs"])
        params["max_steps"] = c3.number_input("Max steps (-1 = epochs)", -1, 1_000_000, d.max_steps, help=h["max_steps"])
        params["per_device_train_batch_size"] = c1.number_input("Batch size", 1, 1024, d.per_device_train_batch_size,
                                                                help=h["per_device_train_batch_size"])
        params["max_length"] = c2.number_input("Max length (tokens)", 8, 131072, d.max_length, help=h["max_length"])
        params["logging_steps"] = c3.number_input("Log every (steps)", 1, 1000, d.logging_steps, help=h["logging_steps"])
        submitted = st.form_submit_button("Train", type="primary", icon=":material/model_training:")
    if submitted:
        base = other.strip() if pick == labels[-1] else models[labels.index(pick)]["name"] if models else other.strip()
        pairs = src_other.strip() if src == src_labels[-1] else sources[src_labels.index(src)]["source"]
        params.update(use_lora=use_lora, lora_r=int(lora_r))
        cfg = TrainJobConfig(method=method, base=base, pairs=pairs or None, sft_source=sft_source, dataset=dataset,
                             name=name.strip() or None, params=params)
        try:
            if (pick == labels[-1] or not models) and cfg.base:  # typed paths stay inside the allowed roots
                cfg.base = checked_path(cfg.base, "model folder")
            if src == src_labels[-1] and cfg.pairs:
                cfg.pairs = checked_path(cfg.pairs, "export path")
            st.session_state["train_run"] = start_training(ws, cfg)
            st.toast(f"Started {st.session_state['train_run']}", icon=":material/model_training:")
        except WorkspaceError as e:
            st.error(md_escape(e, 1000), icon=":material/error:")


live_runs_panel(ws, "train", "train_run")


@st.fragment(run_every=2)
def run_view(run_id: str):
    """The run's curves as they are logged, the pathology warnings, and the registered model at the end."""
    st.subheader(f"Curves of {run_id}")
    metrics = read_metrics(ws, run_id)
    s = training_summary(ws, run_id)
    for w in s["warnings"]:
        st.warning(w, icon=":material/trending_down:")
    if not metrics:
        st.caption("No metrics logged yet: the first point appears after the first logging step.")
    else:
        last = s["last"]
        cols = st.columns(4)
        cols[0].metric("Step", last.get("step", 0))
        cols[1].metric("Loss", f"{last.get('loss', float('nan')):.4f}")
        if "rewards/margins" in last:
            cols[2].metric("Reward margin", f"{last['rewards/margins']:.3f}")
            cols[3].metric("Reward accuracy", f"{last['rewards/accuracies']:.0%}")
        st.plotly_chart(training_curves(metrics), width="stretch", key=f"curves-{run_id}")
    if s["model"]:
        m = s["model"]
        st.success(f"Registered **{md_escape(m['name'])}** ({md_escape(m['family'] or '?')} · {md_escape(m['stage'])}, "
                   f"parent {md_escape(m['parent'])}) at {md_escape(m['path'])}: "
                   "ready to sample or evaluate.", icon=":material/check_circle:")
    elif s["result"].get("last_checkpoint"):
        st.info(f"Cancelled; last checkpoint: {md_escape(s['result']['last_checkpoint'])}", icon=":material/save:")


run_id = st.session_state.get("train_run") or next((r["run_id"] for r in jobs.list_runs(ws, "train", limit=1)), None)
if run_id:
    run_view(run_id)
