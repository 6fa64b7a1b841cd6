"""Home: where the workspace stands in the flow, and what to do next."""

import streamlit as st

from core.present.render import md_escape
from core.store import counts, next_step
from core.store.items import list_datasets
from core.store.models import list_models
from views._ui import dataframe, workspace

ws = workspace()
cur = ws.cursor()
c = counts(cur)

st.title("Loopbreak")
st.caption(f"Workspace {md_escape(ws.root)}")

flow = [
    ("Items", c["items"], "documents imported"),
    ("Candidates", c["candidates"], "sampled outputs"),
    ("Judged", c["judged_candidates"], "candidates with a judgment"),
    ("Pairs pending", c["pairs_pending"], "mined, not yet reviewed"),
    ("Pairs approved", c["pairs_approved"], "ready for training"),
    ("Models", c["models"], "registered, by family and stage"),
    ("Runs", c["runs"], "sampling, judging, training, evaluation"),
]
for col, (label, value, help_) in zip(st.columns(len(flow)), flow):
    col.metric(label, f"{value:,}", help=help_)

title, how = next_step(c)
NEXT_PAGE = {"Import documents": "views/data.py", "Sample candidates": "views/sample.py", "Judge candidates": "views/judge.py",
             "Mine pairs": "views/judge.py", "Review pairs": "views/review.py", "Train and evaluate": "views/train.py"}
with st.container(border=True):
    st.markdown(f"**Next: {title}.** {how}")
    if title in NEXT_PAGE:  # the hint is a link to the page that does it
        st.page_link(NEXT_PAGE[title], label=f"Go to {title.lower()}", icon=":material/arrow_forward:")

left, right = st.columns(2)
with left:
    st.subheader("Datasets")
    datasets = list_datasets(cur)
    if datasets:
        dataframe(datasets, hide_index=True, width="stretch")
    else:
        st.caption("No documents yet.")
with right:
    st.subheader("Models")
    models = list_models(cur)
    if models:
        dataframe(
            [{k: m[k] for k in ("name", "family", "stage", "parent")} for m in models],
            hide_index=True, width="stretch",
        )
    else:
        st.caption("No models registered yet.")
