"""Plotly figures for the pages: built here from plain frames, so pages only place them."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go


def criterion_histograms(df, criteria: list[str]) -> go.Figure:
    """One histogram per criterion (scores in [0, 1]) of a judging run, coloured by the loop flag."""
    cols = [f"score_{c}" for c in criteria if f"score_{c}" in df]
    long = df.melt(id_vars=["degenerate"], value_vars=cols, var_name="criterion", value_name="score").dropna()
    long["criterion"] = long["criterion"].str.removeprefix("score_")
    long["candidate"] = long["degenerate"].map({True: "degenerate", False: "not degenerate"})
    fig = px.histogram(long, x="score", facet_col="criterion", color="candidate", nbins=20, range_x=[0, 1],
                       barmode="stack", color_discrete_map={"degenerate": "#e65100", "not degenerate": "#546e7a"})
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="")
    return fig


def score_by_loop(df) -> go.Figure:
    """Overall score against the loop flag: a judge that sees loops puts degenerate candidates low."""
    d = df.dropna(subset=["overall"]).copy()
    d["loop"] = d.apply(lambda r: "degenerate" if r["degenerate"] else ("loop inside" if r["has_loop"] else "clean"), axis=1)
    fig = px.strip(d, x="loop", y="overall", color="loop", hover_data=["item_id", "candidate_id"],
                   category_orders={"loop": ["clean", "loop inside", "degenerate"]},
                   color_discrete_map={"clean": "#546e7a", "loop inside": "#ffb300", "degenerate": "#e65100"})
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), showlegend=False, yaxis_range=[-0.02, 1.02])
    return fig


TRAIN_PANELS = (
    ("Loss", ["loss"]),
    ("Reward margin", ["rewards/margins"]),
    ("Reward accuracy", ["rewards/accuracies"]),
    ("Log-probs", ["logps/chosen", "logps/rejected"]),
    ("Learning rate", ["learning_rate"]),
    ("Grad norm", ["grad_norm"]),
)


def training_curves(rows: list[dict]) -> go.Figure:
    """A training run's logged metrics against the step, one panel each (SFT runs leave the DPO ones empty)."""
    from plotly.subplots import make_subplots

    rows = [r for r in rows if "loss" in r and "step" in r]
    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for t, _ in TRAIN_PANELS], horizontal_spacing=0.06, vertical_spacing=0.16)
    colors = {"logps/chosen": "#2e7d32", "logps/rejected": "#e65100"}
    for i, (_, keys) in enumerate(TRAIN_PANELS):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=key.split("/")[-1],
                                         line=dict(color=colors.get(key, "#546e7a")), marker=dict(size=4),
                                         showlegend=key in colors), row=i // 3 + 1, col=i % 3 + 1)
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.08))
    fig.update_xaxes(title_text="step", row=2)
    return fig
