"""The Review page's pair pane, registered once per server process (a page script runs on every
rerun; registering the same component again each time would replace it and log a warning)."""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent
PANE = st.components.v2.component("lb_review_pane", css=(HERE / "review_pane.css").read_text(encoding="utf-8"),
                                  js=(HERE / "review_pane.js").read_text(encoding="utf-8"), isolate_styles=False)
