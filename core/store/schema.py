"""The schema: versioned migrations, run in one transaction when an older workspace is opened."""

from __future__ import annotations

import duckdb

from core.store.base import WorkspaceError

# Each step moves the schema from version i to i + 1. Never edit a released step: add one.
MIGRATIONS: list[list[str]] = [
    # 1: documents, models and runs
    [
        """CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
        """CREATE TABLE items (
            dataset VARCHAR NOT NULL, item_id VARCHAR NOT NULL, split VARCHAR NOT NULL,
            text VARCHAR NOT NULL, reference VARCHAR, image_path VARCHAR, metadata JSON,
            source VARCHAR, imported_at TIMESTAMP NOT NULL,
            PRIMARY KEY (dataset, item_id))""",
        """CREATE TABLE models (
            name VARCHAR PRIMARY KEY, path VARCHAR NOT NULL, family VARCHAR,
            stage VARCHAR, parent VARCHAR, config JSON, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, model VARCHAR, dataset VARCHAR,
            split VARCHAR, config JSON, status VARCHAR NOT NULL, error VARCHAR,
            job_dir VARCHAR, created_at TIMESTAMP NOT NULL, finished_at TIMESTAMP)""",
    ],
    # 2: what sampling, judging, mining, review and training produce
    [
        """CREATE TABLE candidates (
            candidate_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL, sample_index INTEGER NOT NULL, prompt VARCHAR,
            text VARCHAR NOT NULL, n_tokens INTEGER, finish_reason VARCHAR, backend VARCHAR,
            decoding JSON, seed BIGINT, latency_s DOUBLE, degenerate BOOLEAN, has_loop BOOLEAN,
            loops JSON, metrics JSON, created_at TIMESTAMP)""",
        """CREATE TABLE judgments (
            judgment_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL,
            candidate_id VARCHAR NOT NULL, judge VARCHAR NOT NULL, scores JSON,
            overall DOUBLE, rationale VARCHAR, error VARCHAR, created_at TIMESTAMP)""",
        """CREATE TABLE pairs (
            pair_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL, prompt VARCHAR, chosen_candidate_id VARCHAR,
            rejected_candidate_id VARCHAR, chosen_text VARCHAR, rejected_text VARCHAR,
            status VARCHAR NOT NULL DEFAULT 'pending', provenance JSON,
            version INTEGER NOT NULL DEFAULT 0, updated_by VARCHAR, updated_at TIMESTAMP)""",
        """CREATE TABLE decisions (
            decision_id VARCHAR PRIMARY KEY, pair_id VARCHAR NOT NULL, reviewer VARCHAR,
            action VARCHAR NOT NULL, before JSON, after JSON, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE audit_log (
            audit_id VARCHAR PRIMARY KEY, pair_id VARCHAR, reviewer VARCHAR, kind VARCHAR NOT NULL,
            before JSON, after JSON, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE train_metrics (
            run_id VARCHAR NOT NULL, step INTEGER NOT NULL, name VARCHAR NOT NULL, value DOUBLE,
            PRIMARY KEY (run_id, step, name))""",
    ],
    # 3: which job shards the writer has ingested (jobs never open the database)
    [
        """CREATE TABLE shards (
            path VARCHAR NOT NULL, run_id VARCHAR NOT NULL, rows BIGINT, ingested_at TIMESTAMP,
            PRIMARY KEY (run_id, path))""",
    ],
    # 4: review — a short lease so concurrent reviewers get different pairs, second reviews, undo
    [
        "ALTER TABLE pairs ADD COLUMN claimed_by VARCHAR",
        "ALTER TABLE pairs ADD COLUMN claimed_at TIMESTAMP",
        "ALTER TABLE pairs ADD COLUMN second_review BOOLEAN DEFAULT false",
        "ALTER TABLE decisions ADD COLUMN round INTEGER DEFAULT 1",
        "ALTER TABLE decisions ADD COLUMN undoes VARCHAR",
        "ALTER TABLE audit_log ADD COLUMN decision_id VARCHAR",
    ],
    # 5: evaluation — each candidate's quality against its item's reference, computed by the worker
    [
        "ALTER TABLE candidates ADD COLUMN quality DOUBLE",
    ],
    # 6: scale — derived columns so the candidate browser never scans texts or aggregates judgments (core/derived.py)
    [
        "ALTER TABLE candidates ADD COLUMN chars INTEGER",
        "ALTER TABLE candidates ADD COLUMN overall DOUBLE",
        "UPDATE candidates SET chars = length(text)",
        """UPDATE candidates c SET overall = j.overall FROM (
             SELECT candidate_id, last(overall ORDER BY created_at) AS overall FROM judgments GROUP BY candidate_id) j
           WHERE c.candidate_id = j.candidate_id""",
        "INSERT OR REPLACE INTO meta VALUES ('overall_at_judgments', (SELECT count(*) FROM judgments)::VARCHAR)",
        # a candidate's judgments by id: the review pane and the candidate browser look them up on every pair / row
        "CREATE INDEX judgments_candidate ON judgments (candidate_id)",
    ],
    # 7: run and pair links as columns, not fished out of JSON (what a judging run scored, the instruction a
    #    sampling run built its prompts with, the model files it loaded; the judging run and scores a pair came from)
    [
        "ALTER TABLE runs ADD COLUMN source_run VARCHAR",
        "ALTER TABLE runs ADD COLUMN instruction VARCHAR",
        "ALTER TABLE runs ADD COLUMN backend VARCHAR",
        "ALTER TABLE runs ADD COLUMN model_path VARCHAR",
        """UPDATE runs SET source_run = json_extract_string(config, '$.source_run'),
                          instruction = json_extract_string(config, '$.config.instruction'),
                          backend = coalesce(json_extract_string(config, '$.config.backend'), json_extract_string(config, '$.backend')),
                          model_path = json_extract_string(config, '$.model_path')""",
        "ALTER TABLE pairs ADD COLUMN judge_run VARCHAR",
        "ALTER TABLE pairs ADD COLUMN rejected_because VARCHAR",
        "ALTER TABLE pairs ADD COLUMN chosen_score DOUBLE",
        "ALTER TABLE pairs ADD COLUMN rejected_score DOUBLE",
        """UPDATE pairs SET judge_run = json_extract_string(provenance, '$.judge_run'),
                           rejected_because = json_extract_string(provenance, '$.rejected_because'),
                           chosen_score = TRY_CAST(json_extract_string(provenance, '$.chosen_score') AS DOUBLE),
                           rejected_score = TRY_CAST(json_extract_string(provenance, '$.rejected_score') AS DOUBLE)""",
    ],
    # 8: what a vision model saw — the content hash of the item's page image at sampling time
    ["ALTER TABLE candidates ADD COLUMN image_hash VARCHAR"],
    # 9: ingest at scale — each distinct prompt stored once (a sampling run's 8 candidates of an item share one,
    #    every page of a vision run shares one), candidates referring to it by its SHA-256 (core/store/candidates.py
    #    prompt_id); and the long texts zstd-compressed (written once, rarely scanned: on unique model outputs it
    #    wrote 1.7x faster than DuckDB's own choice, at 0.4x the size). DuckDB cannot change a column's compression
    #    in place, so candidates is rebuilt, its columns in the order they came.
    [
        "CREATE TABLE prompts (prompt_id VARCHAR PRIMARY KEY, prompt VARCHAR NOT NULL USING COMPRESSION zstd)",
        "INSERT INTO prompts SELECT sha256(prompt), any_value(prompt) FROM candidates WHERE prompt IS NOT NULL GROUP BY 1",
        """CREATE TABLE candidates_9 (
            candidate_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL, sample_index INTEGER NOT NULL, prompt_id VARCHAR,
            text VARCHAR NOT NULL USING COMPRESSION zstd, n_tokens INTEGER, finish_reason VARCHAR, backend VARCHAR,
            decoding JSON, seed BIGINT, latency_s DOUBLE, degenerate BOOLEAN, has_loop BOOLEAN,
            loops JSON USING COMPRESSION zstd, metrics JSON USING COMPRESSION zstd, created_at TIMESTAMP,
            quality DOUBLE, chars INTEGER, overall DOUBLE, image_hash VARCHAR)""",
        "INSERT INTO candidates_9 BY NAME SELECT * EXCLUDE (prompt), sha256(prompt) AS prompt_id FROM candidates",
        "DROP TABLE candidates",
        "ALTER TABLE candidates_9 RENAME TO candidates",
    ],
]


SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(cur: duckdb.DuckDBPyConnection) -> int:
    has_meta = cur.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
    ).fetchone()[0]
    if not has_meta:
        return 0
    row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to `target`, all steps in one transaction. Returns the version reached.

    `db` is a Workspace (its writes go through the write door), or a bare DuckDB connection (how
    tests make a workspace of an older version)."""
    from core.store import Workspace, write

    cur = db.cursor()
    current = schema_version(cur)
    if current > SCHEMA_VERSION:
        raise WorkspaceError(
            f"This workspace has schema version {current}, newer than this Loopbreak ({SCHEMA_VERSION}). Upgrade Loopbreak."
        )
    if current >= target:
        return current
    if isinstance(db, Workspace):
        with write(db) as cur:
            _run_steps(cur, current, target)
        return target
    cur.execute("BEGIN")
    try:
        _run_steps(cur, current, target)
        cur.execute("COMMIT")
    except Exception:
        cur.execute("ROLLBACK")
        raise
    return target


def _run_steps(cur, current: int, target: int) -> None:
    for step in MIGRATIONS[current:target]:
        for sql in step:
            cur.execute(sql)
    cur.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(target)])
