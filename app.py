"""Loopbreak's Streamlit entry: navigation, the workspace picker and the sidebar status."""

from pathlib import Path

import streamlit as st

from core import jobs
from core.present.render import md_escape
from core.store import counts
from views._ui import default_workspace, login_gate, workspace

# The icon is a file of ours: a :material/…: page icon makes the browser fetch it from fonts.gstatic.com.
st.set_page_config(page_title="Loopbreak", page_icon=str(Path(__file__).parent / "views" / "icon.svg"), layout="wide")
login = login_gate()  # with require_login (loopbreak.toml [access]): only allowed reviewers get past this line

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/data.py", title="Data", icon=":material/description:"),
    st.Page("views/sample.py", title="Sample", icon=":material/casino:"),
    st.Page("views/judge.py", title="Judge", icon=":material/gavel:"),
    st.Page("views/review.py", title="Review", icon=":material/rate_review:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/evaluate.py", title="Evaluate", icon=":material/query_stats:"),
    st.Page("views/candidates.py", title="Candidates", icon=":material/table_rows:"),
    st.Page("views/inspect.py", title="Inspect", icon=":material/search:"),
]
nav = st.navigation(pages)


@st.cache_resource(show_spinner=False)
def reconcile(path: str) -> None:
    """Once per app process and workspace: runs whose worker died while the app was down become failed."""
    jobs.sync_runs(workspace())


@st.fragment(run_every=3)
def active_jobs():
    """Keeps ingesting the running jobs' shards whatever page is open, and shows their progress."""
    running = [r for r in jobs.list_runs(ws, limit=20) if r["status"] in ("queued", "running")]
    if running:
        jobs.sync_runs(ws)
    for run in running:
        p = run["progress"]
        st.progress(min(1.0, p.get("done", 0) / p["total"]) if p.get("total") else 0.0,
                    text=f"{run['kind']} · {p.get('done', 0)}/{p.get('total', '?')}")


with st.sidebar:
    st.markdown("### :material/all_inclusive: Loopbreak")
    st.session_state.setdefault("workspace_path", default_workspace())
    st.text_input(
        "Workspace", key="workspace_path",
        help="Folder holding loopbreak.duckdb, jobs/, models/ and exports/. Created if missing.",
    )
    ws = workspace()
    reconcile(str(ws.root))
    c = counts(ws.cursor())
    st.caption(f"{c['items']:,} items · {c['candidates']:,} candidates · {c['pairs']:,} pairs · {c['models']} models")
    active_jobs()
    if login:
        st.caption(f"Signed in as {md_escape(login)}")
        st.button("Log out", key="logout", icon=":material/logout:", on_click=st.logout)

nav.run()
