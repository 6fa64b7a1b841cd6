"""Data: import documents (upload or path) and browse the items."""

import json

import streamlit as st

from core.present.render import md_escape
from core.steps.importer import ImportFields, import_file, save_upload
from core.store import WorkspaceError
from core.store.items import get_item, list_datasets, search_items
from views._ui import checked_path, dataframe, show_image, workspace

ws = workspace()
cur = ws.cursor()
st.title("Data")

with st.expander("Import documents", expanded=not list_datasets(cur), icon=":material/upload:"):
    with st.form("import"):
        upload = st.file_uploader("Upload a file", type=["jsonl", "ndjson", "json", "csv", "tsv", "parquet"])
        path = st.text_input("…or a path on this machine (a file or a `datasets` folder)")
        c1, c2 = st.columns(2)
        dataset = c1.text_input("Dataset name", value="docs")
        split = c2.text_input("Split", placeholder="from the file's split column, else train")
        f = ImportFields()
        cols = st.columns(4)
        fields = ImportFields(
            text=cols[0].text_input("Text field", f.text, help=ImportFields.__dataclass_fields__["text"].metadata["help"]),
            reference=cols[1].text_input("Reference field", f.reference, help=ImportFields.__dataclass_fields__["reference"].metadata["help"]),
            id=cols[2].text_input("Id field", f.id, help=ImportFields.__dataclass_fields__["id"].metadata["help"]),
            image=cols[3].text_input("Image field", f.image, help=ImportFields.__dataclass_fields__["image"].metadata["help"]),
        )
        submitted = st.form_submit_button("Import", type="primary", icon=":material/upload:")
    if submitted:
        if not upload and not path.strip():
            st.warning("Choose a file to upload or type a path.")
        else:
            try:
                source = save_upload(ws, upload.name, upload.getvalue()) if upload else checked_path(path.strip(), "import path")
                r = import_file(ws, source, dataset.strip(), split=split.strip() or None, fields=fields)
                st.success(f"Imported {r.new:,} new items into **{md_escape(r.dataset)}** ({r.unchanged:,} unchanged).")
            except WorkspaceError as e:
                st.error(md_escape(e, 1000), icon=":material/error:")

datasets = list_datasets(cur)
if not datasets:
    st.info("No documents yet: import a file above, or run `loopbreak demo`.")
    st.stop()

st.subheader("Items")
names = sorted({d["dataset"] for d in datasets})
c1, c2, c3 = st.columns([1, 1, 2])
dataset = c1.selectbox("Dataset", names)
split = c2.selectbox("Split", ["(all)"] + sorted({d["split"] for d in datasets if d["dataset"] == dataset}))
query = c3.text_input("Search id, text or reference", placeholder="e.g. Parafuso")
page_size = 100
items, total = search_items(
    cur, dataset=dataset, split=None if split == "(all)" else split, query=query,
    limit=page_size, offset=page_size * (st.session_state.get("items_page", 1) - 1),
)
pages = max(1, -(-total // page_size))
st.caption(f"{total:,} items")
if pages > 1:
    st.columns(6)[0].number_input(f"Page (of {pages})", 1, pages, key="items_page")
event = dataframe(
    items, hide_index=True, width="stretch", height=390,
    on_select="rerun", selection_mode="single-row", key="items_table",
)
rows = event.selection.rows
if not rows:
    st.caption("Select a row to see the document, its image and its reference.")
    st.stop()

item = get_item(cur, dataset, items.iloc[rows[0]]["item_id"])
st.subheader(f"Item {md_escape(item['item_id'])}", anchor=False)
st.caption(f"{md_escape(item['dataset'])} · {md_escape(item['split'])} · imported from {md_escape(item['source'])}")
doc, ref = st.columns(2)
with doc:
    st.markdown("**Document**")
    st.code(item["text"], language=None, wrap_lines=True)
    if item["image_path"]:
        show_image(st, item["image_path"], ws)
with ref:
    st.markdown("**Reference**")
    if item["reference"] is None:
        st.caption("No reference.")
    else:
        try:
            st.json(json.loads(item["reference"]), expanded=2)
        except ValueError:
            st.code(item["reference"], language=None, wrap_lines=True)
    if item["metadata"]:
        st.markdown("**Metadata**")
        st.json(item["metadata"], expanded=False)
