"""Loopbreak's Streamlit entry: navigation, the workspace picker and the sidebar status."""

import streamlit as st

from core.store import counts
from views._ui import default_workspace, workspace

st.set_page_config(page_title="Loopbreak", page_icon=":material/all_inclusive:", layout="wide")

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/data.py", title="Data", icon=":material/description:"),
]
nav = st.navigation(pages)

with st.sidebar:
    st.markdown("### :material/all_inclusive: Loopbreak")
    st.session_state.setdefault("workspace_path", default_workspace())
    st.text_input(
        "Workspace", key="workspace_path",
        help="Folder holding loopbreak.duckdb, jobs/, models/ and exports/. Created if missing.",
    )
    ws = workspace()
    c = counts(ws.cursor())
    st.caption(f"{c['items']:,} items · {c['candidates']:,} candidates · {c['pairs']:,} pairs · {c['models']} models")

nav.run()
