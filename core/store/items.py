"""Queries of `items`: datasets, search, one item."""

from __future__ import annotations

import json

import duckdb


def list_datasets(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    """Datasets with their item count per split."""
    rows = cur.execute(
        "SELECT dataset, split, count(*) FROM items GROUP BY dataset, split ORDER BY dataset, split"
    ).fetchall()
    return [{"dataset": d, "split": s, "items": n} for d, s, n in rows]


def search_items(
    cur: duckdb.DuckDBPyConnection,
    *,
    dataset: str | None = None,
    split: str | None = None,
    query: str = "",
    limit: int = 200,
    offset: int = 0,
):
    """Items matching the filters (a case-insensitive substring of id, text or reference), as a DataFrame."""
    where, params = ["1=1"], []
    if dataset:
        where.append("dataset = ?")
        params.append(dataset)
    if split:
        where.append("split = ?")
        params.append(split)
    if query:
        where.append("(item_id ILIKE ? OR text ILIKE ? OR reference ILIKE ?)")
        like = f"%{query}%"
        params += [like, like, like]
    sql = f"""SELECT dataset, split, item_id, length(text) AS chars, image_path IS NOT NULL AS has_image,
                     left(replace(text, chr(10), ' '), 120) AS preview
              FROM items WHERE {' AND '.join(where)}
              ORDER BY dataset, split, item_id LIMIT ? OFFSET ?"""
    total = cur.execute(f"SELECT count(*) FROM items WHERE {' AND '.join(where)}", params).fetchone()[0]
    return cur.execute(sql, params + [limit, offset]).df(), total


def get_item(cur: duckdb.DuckDBPyConnection, dataset: str, item_id: str) -> dict | None:
    row = cur.execute(
        "SELECT dataset, item_id, split, text, reference, image_path, metadata, source, imported_at "
        "FROM items WHERE dataset = ? AND item_id = ?",
        [dataset, item_id],
    ).fetchone()
    if row is None:
        return None
    keys = ("dataset", "item_id", "split", "text", "reference", "image_path", "metadata", "source", "imported_at")
    item = dict(zip(keys, row))
    item["metadata"] = json.loads(item["metadata"]) if item["metadata"] else {}
    return item
