"""What every view needs: the open workspace. UI glue only; the logic lives in core/."""

from __future__ import annotations

import argparse
import sys

import streamlit as st

from core.store import Workspace, WorkspaceError, open_workspace, resolve_workspace


def default_workspace() -> str:
    """`streamlit run app.py -- --workspace W`, else $LOOPBREAK_WORKSPACE, else ./workspace."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", "-w")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return str(resolve_workspace(known.workspace))


@st.cache_resource(show_spinner=False)
def _open(path: str) -> Workspace:
    return open_workspace(path)


def workspace() -> Workspace:
    """The workspace chosen in the sidebar; stops the page with a clear error if it cannot be opened."""
    path = st.session_state.setdefault("workspace_path", default_workspace())
    try:
        return _open(path)
    except WorkspaceError as e:
        st.error(str(e), icon=":material/lock:")
        st.stop()
