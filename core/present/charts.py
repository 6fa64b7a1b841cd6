"""Plotly figures for the pages: built here from plain frames, so pages only place them."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go


def plain(text) -> str:
    """A data-derived label (criterion, family, stage, model, item id) for a figure: plotly renders
    ``<b>``, ``<a href>``, ``<span style>`` in any text it draws, so ``&``, ``<`` and ``>`` are
    escaped (plotly shows the entities back as the characters)."""
    from html import escape

    return escape(str(text), quote=False)


def criterion_histograms(df, criteria: list[str]) -> go.Figure:
    """One histogram per criterion (scores in [0, 1]) of a judging run, coloured by the loop flag."""
    cols = [f"score_{c}" for c in criteria if f"score_{c}" in df]
    long = df.melt(id_vars=["degenerate"], value_vars=cols, var_name="criterion", value_name="score").dropna()
    long["criterion"] = long["criterion"].str.removeprefix("score_").map(plain)
    long["candidate"] = long["degenerate"].map({True: "degenerate", False: "not degenerate"})
    fig = px.histogram(long, x="score", facet_col="criterion", color="candidate", nbins=20, range_x=[0, 1],
                       barmode="stack", color_discrete_map={"degenerate": "#e65100", "not degenerate": "#546e7a"})
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="")
    return fig


def score_by_loop(df) -> go.Figure:
    """Overall score against the loop flag: a judge that sees loops puts degenerate candidates low."""
    d = df.dropna(subset=["overall"]).copy()
    for col in ("item_id", "candidate_id"):
        d[col] = d[col].map(plain)
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


STAGE_COLORS = {"Vanilla": "#90a4ae", "SFT": "#e65100", "SFT+DPO": "#2e7d32"}


def _stage_color(label: str) -> str:
    if label in STAGE_COLORS:
        return STAGE_COLORS[label]
    return "#1565c0" if label.startswith("SFT+DPO") else "#ffb300"  # later DPO rounds; SFT trained longer


def family_stage_bars(rep: dict) -> go.Figure:
    """DharmaOCR's figure 1: degeneration rate per family, one bar per stage, Wilson 95% error bars,
    and DPO's relative reduction against SFT written above each family (flagged when intervals overlap)."""
    fig = go.Figure()
    families = list(rep["families"])
    labels = dict.fromkeys(r["stage_label"] for f in rep["families"].values() for r in f["stages"])
    order = sorted(labels, key=lambda lb: min(_rank_of(rep, lb)))
    for label in order:
        xs, ys, lo, hi, text = [], [], [], [], []
        for fam in families:
            r = next((r for r in rep["families"][fam]["stages"] if r["stage_label"] == label), None)
            if r is None:
                continue
            xs.append(plain(fam))
            ys.append(100 * r["rate"])
            lo.append(100 * (r["rate"] - r["ci_low"]))
            hi.append(100 * (r["ci_high"] - r["rate"]))
            text.append(f"{r['degenerate']}/{r['candidates']}")
        # "auto" puts a label outside a bar too short for it, and the outline keeps a 0% bar visible as a line.
        fig.add_trace(go.Bar(name=plain(label), x=xs, y=ys, marker_color=_stage_color(label), text=text, textposition="auto",
                             marker_line=dict(color=_stage_color(label), width=2),
                             error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, thickness=1.2),
                             hovertemplate="%{x} · " + plain(label) + "<br>%{y:.1f}% (%{text})<extra></extra>"))
    top = max([100 * r["ci_high"] for f in rep["families"].values() for r in f["stages"]] or [1])
    for fam in families:
        red = next((x for x in rep["families"][fam]["reductions"] if x["stage"] == "dpo"), None)
        if red is None:
            continue
        if red["reduction"] is None:
            note = "SFT: no loops"
        else:
            change = -100 * red["reduction"]  # a change of the rate: negative when DPO looped less
            note = f"DPO vs SFT: {_signed(change)}"
            if red.get("ci95"):  # the interval of the same change: the reduction's, negated and swapped
                note += f"<br>(95% CI {_signed(-100 * red['ci95'][1])} … {_signed(-100 * red['ci95'][0])})"
            if red["overlap"]:
                note += "<br><i>intervals overlap</i>"
        fig.add_annotation(x=plain(fam), y=top * 1.08, text=note, showarrow=False, font=dict(size=11), yanchor="bottom")
    fig.update_layout(barmode="group", height=420, margin=dict(l=10, r=10, t=60, b=10), yaxis_title="degenerate outputs (%)",
                      yaxis_range=[0, top * 1.35 + 1], legend=dict(orientation="h", y=-0.12), bargap=0.25)
    return fig


def _signed(pct: float) -> str:
    """-100 -> "−100%", 12.4 -> "+12%", 0 -> "0%" (a real minus sign)."""
    r = round(pct)
    return "0%" if r == 0 else f"{'−' if r < 0 else '+'}{abs(r)}%"


def _rank_of(rep: dict, label: str) -> list:
    from core.steps.evaluate import stage_rank

    return [stage_rank(r["stage"]) for f in rep["families"].values() for r in f["stages"] if r["stage_label"] == label]


def reduction_bars(rep: dict) -> go.Figure:
    """Relative reduction of each DPO stage against SFT per family, with the bootstrap 95% interval."""
    fig = go.Figure()
    rows = [(fam, x) for fam, f in rep["families"].items() for x in f["reductions"] if x["reduction"] is not None]
    for label in dict.fromkeys(x["label"] for _, x in rows):
        pts = [(fam, x) for fam, x in rows if x["label"] == label]
        fig.add_trace(go.Bar(
            name=plain(label), x=[plain(f) for f, _ in pts], y=[100 * x["reduction"] for _, x in pts], marker_color=_stage_color(label),
            error_y=dict(type="data", symmetric=False, array=[100 * (x["ci95"][1] - x["reduction"]) for _, x in pts],
                         arrayminus=[100 * (x["reduction"] - x["ci95"][0]) for _, x in pts]),
        ))
    if rep.get("mean_dpo_reduction") is not None:
        fig.add_hline(y=100 * rep["mean_dpo_reduction"], line_dash="dot", annotation_text=f"mean {100 * rep['mean_dpo_reduction']:.0f}%")
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=20, b=10),
                      yaxis_title="reduction vs SFT (%)", legend=dict(orientation="h", y=-0.2))
    return fig


def quality_vs_degeneration(rows: list[dict]) -> go.Figure:
    """Each evaluated model as a point: degeneration rate against quality, coloured by stage."""
    import pandas as pd

    d = pd.DataFrame([r for r in rows if r.get("quality") is not None])
    if d.empty:
        return go.Figure()
    d["degenerate (%)"] = 100 * d["rate"]
    for col in ("stage_label", "family", "model", "run_id", "decoding"):
        if col in d:
            d[col] = d[col].map(plain)
    fig = px.scatter(d, x="degenerate (%)", y="quality", color="stage_label", symbol="family", hover_name="model",
                     hover_data={"run_id": True, "decoding": True}, color_discrete_map={lb: _stage_color(lb) for lb in d["stage_label"]})
    fig.update_traces(marker=dict(size=12))
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=20, b=10), legend_title_text="", yaxis_range=[0, 1])
    return fig


def loop_histograms(shapes: list[dict]) -> go.Figure:
    """Loop length (characters) and period of the degenerate outputs, by stage."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["loop length (chars)", "period (chars)"])
    for label in dict.fromkeys(s["stage"] for s in shapes):
        pts = [s for s in shapes if s["stage"] == label]
        for col, key in ((1, "length"), (2, "period")):
            fig.add_trace(go.Histogram(x=[s[key] for s in pts], name=plain(label), marker_color=_stage_color(label), opacity=0.75,
                                       showlegend=col == 1, legendgroup=label), row=1, col=col)
    fig.update_layout(barmode="overlay", height=300, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


def finish_reasons(rows: list[dict]) -> go.Figure:
    """Per evaluated model: how its candidates ended (EOS, the limit, loop-aware stop)."""
    fig = go.Figure()
    names = [plain(f"{r['model']} · {r['decoding']}") for r in rows]
    for key, color in (("stop", "#546e7a"), ("length", "#e65100"), ("repetition", "#ffb300")):
        fig.add_trace(go.Bar(name=key, y=names, x=[r[key] for r in rows], orientation="h", marker_color=color))
    fig.update_layout(barmode="stack", height=60 + 28 * len(rows), margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", y=-0.15), xaxis_title="candidates")
    return fig


def hover_token(text: str) -> str:
    """A token for plotly's hover label: newlines and tabs made visible, then ``&``, ``<``, ``>``
    escaped (plotly renders hover text as HTML-ish markup; model text is untrusted)."""
    from html import escape

    return "«" + escape(text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍"), quote=False) + "»"


def attractor_figure(result: dict, loops: list | None = None) -> go.Figure:
    """Teacher-forced probability of each completion token (x = token index, y = p), a rolling mean,
    and the loop span(s) shaded and labelled: inside a loop the points climb towards 1 when the
    model has made the repetition its own. ``loops`` are the detector's spans (character offsets;
    mapped onto the result's tokens), or None for the result's own ``loops``."""
    import pandas as pd

    from core.steps.attractor import map_loops

    tokens = result["tokens"]
    spans = result["loops"] if loops is None else map_loops(tokens, loops)
    x = [t["index"] for t in tokens]
    p = [t["p"] for t in tokens]
    inside = [False] * len(tokens)
    for lp in spans:
        for k in range(lp["token_start"], lp["token_end"]):
            inside[k] = True
    custom = [[hover_token(t["text"]), t["rank"], t["entropy"]] for t in tokens]
    fig = go.Figure()
    for flag, name, color in ((False, "token", "#546e7a"), (True, "token in a loop", "#e65100")):
        idx = [k for k, m in enumerate(inside) if m == flag]
        if idx:
            fig.add_trace(go.Scatter(
                x=[x[k] for k in idx], y=[p[k] for k in idx], customdata=[custom[k] for k in idx], mode="markers",
                name=name, marker=dict(size=4, color=color, opacity=0.7),
                hovertemplate="token %{x}: %{customdata[0]}<br>p = %{y:.3f} · rank %{customdata[1]} · "
                              "entropy %{customdata[2]:.2f} nats<extra></extra>",
            ))
    window = max(5, min(64, len(p) // 30))
    if p:
        mean = pd.Series(p).rolling(window, min_periods=1, center=True).mean()
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=f"rolling mean ({window} tokens)",
                                 line=dict(color="#1565c0", width=2), hoverinfo="skip"))
    for n, lp in enumerate(spans, 1):
        label = f"loop {n}: ×{lp['repeats']:.1f}" + (" (templated)" if lp.get("templated") else "")
        if lp.get("mean_p") is not None:
            label += f", mean p {lp['mean_p']:.2f}"
        fig.add_vrect(x0=lp["token_start"] - 0.5, x1=lp["token_end"] - 0.5, fillcolor="#ffb300", opacity=0.15,
                      line_width=0, annotation_text=label, annotation_position="top left")
        if lp["token_start"] < lp["first_repeat_token"] < lp["token_end"]:
            x0 = lp["first_repeat_token"] - 0.5  # where the first repeat begins; kept below the label
            fig.add_shape(type="line", x0=x0, x1=x0, yref="paper", y0=0, y1=0.9, line=dict(color="#e65100", width=1, dash="dot"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.2),
                      xaxis_title="completion token", yaxis_title="p(token | everything before)",
                      yaxis_range=[0, 1.08], hovermode="closest")
    return fig
