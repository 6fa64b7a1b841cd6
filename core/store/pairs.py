"""Queries of `pairs` outside review (core/store/review.py): writing mined pairs, and reading approved ones
for export and training."""

from __future__ import annotations

from core.store import write


def insert_mined(ws, rows: list[dict]) -> int:
    """Mined pairs as pending, their texts and prompt joined from the candidates in SQL (800k texts through
    Python took a minute and 4 GB). A pair that exists (perhaps reviewed) is never overwritten. Returns how many are new."""
    import pyarrow as pa

    with write(ws) as cur:
        before = cur.execute("SELECT count(*) FROM pairs").fetchall()[0][0]
        cur.register("mined_pairs", pa.Table.from_pylist(rows))
        try:
            cur.execute(
                """INSERT OR IGNORE INTO pairs BY NAME
                   SELECT m.* REPLACE (provenance::JSON AS provenance, coalesce(m.chosen_text::VARCHAR, ch.text) AS chosen_text),
                          rj.text AS rejected_text, pr.prompt AS prompt
                   FROM mined_pairs m LEFT JOIN candidates ch ON ch.candidate_id = m.chosen_candidate_id
                   JOIN candidates rj ON rj.candidate_id = m.rejected_candidate_id
                   LEFT JOIN prompts pr ON pr.prompt_id = rj.prompt_id"""
            )
        finally:
            cur.unregister("mined_pairs")
        return cur.execute("SELECT count(*) FROM pairs").fetchall()[0][0] - before


APPROVED_KEYS = ("pair_id", "run_id", "dataset", "item_id", "prompt", "chosen", "rejected", "chosen_candidate_id",
                 "rejected_candidate_id", "rejected_finish_reason", "reviewer", "model", "model_path", "document", "instruction",
                 "image_path", "image_hash")


def approved(ws, run: str | None = None) -> list[dict]:
    """The approved pairs with what training needs, in pair order: the sampled prompt, both texts, the
    rejected's finish reason, the sampling run's model (name and path), the instruction it was sampled with,
    and the item's page image (path, and its hash when the candidates were sampled from it)."""
    rows = ws.cursor().execute(
        """SELECT p.pair_id, p.run_id, p.dataset, p.item_id, p.prompt, p.chosen_text, p.rejected_text,
                  p.chosen_candidate_id, p.rejected_candidate_id, c.finish_reason, p.updated_by, r.model,
                  coalesce(m.path, r.model_path), i.text, r.instruction, i.image_path, c.image_hash
           FROM pairs p LEFT JOIN candidates c ON c.candidate_id = p.rejected_candidate_id
           LEFT JOIN runs r ON r.run_id = p.run_id LEFT JOIN models m ON m.name = r.model
           LEFT JOIN items i ON i.dataset = p.dataset AND i.item_id = p.item_id
           WHERE p.status = 'approved' AND (? IS NULL OR p.run_id = ?) ORDER BY p.pair_id""",
        [run, run],
    ).fetchall()
    return [dict(zip(APPROVED_KEYS, r)) for r in rows]


def approved_per_run(ws) -> list[tuple[str, int]]:
    """(sampling run, approved pairs) for every run that has some."""
    return ws.cursor().execute(
        "SELECT run_id, count(*) FROM pairs WHERE status = 'approved' GROUP BY run_id ORDER BY run_id").fetchall()
