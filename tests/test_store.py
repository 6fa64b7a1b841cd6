import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.store import WorkspaceError, counts, next_step, open_workspace
from core.store.models import list_models, register_model
from core.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version


def test_open_creates_layout_and_schema(ws):
    for sub in ("jobs", "models", "exports", "images"):
        assert (ws.root / sub).is_dir()
    assert ws.db_path.is_file()
    assert schema_version(ws.cursor()) == SCHEMA_VERSION
    assert set(counts(ws.cursor())) >= {"items", "candidates", "judgments", "pairs", "models", "runs"}


def test_reopen_is_idempotent(tmp_path):
    w = open_workspace(tmp_path / "w")
    register_model(w.cursor(), name="m", path="/x", family="llama", stage="sft")
    w.close()
    w = open_workspace(tmp_path / "w")
    assert [m["name"] for m in list_models(w.cursor())] == ["m"]
    w.close()


def test_migrates_an_older_workspace(tmp_path):
    """A workspace written at schema version 1 opens, keeps its rows and gains the newer tables."""
    import duckdb

    path = tmp_path / "old" / "loopbreak.duckdb"
    path.parent.mkdir()
    con = duckdb.connect(str(path))
    migrate(con, target=1)
    con.execute(
        "INSERT INTO items VALUES ('d', 'a', 'train', 'text', NULL, NULL, '{}', 'test', now())"
    )
    assert schema_version(con) == 1
    assert not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name='pairs'").fetchone()[0]
    con.close()

    w = open_workspace(tmp_path / "old")
    cur = w.cursor()
    assert schema_version(cur) == SCHEMA_VERSION == len(MIGRATIONS)
    assert counts(cur)["items"] == 1 and counts(cur)["pairs"] == 0
    w.close()


def test_a_schema_8_store_keeps_every_candidate_and_stores_each_prompt_once(tmp_path):
    """Schema 9 moves the prompt out of candidates (rebuilt, with zstd texts): every column's values stay,
    each distinct prompt is one row of `prompts`, and a candidate without a prompt keeps none."""
    import duckdb

    from core.store.candidates import get_candidate, prompt_id

    path = tmp_path / "old" / "loopbreak.duckdb"
    path.parent.mkdir()
    con = duckdb.connect(str(path))
    migrate(con, target=8)
    rows = [(f"r:i{k}:{j}", "r", "d", f"i{k}", j, None if k == 3 else f"Documento {k}\nJSON:", f"out {k} {j} é", 7, "stop",
             '{"greedy": true}', 0.5, [] if j else [{"start": 1}], j * 0.1, len(f"out {k} {j} é"), 0.8, "h")
            for k in range(4) for j in range(3)]
    con.executemany("INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, prompt, text, n_tokens, "
                    "finish_reason, decoding, latency_s, loops, quality, chars, overall, image_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON, ?, ?, ?, ?)", [list(r[:11]) + [json.dumps(r[11])] + list(r[12:]) for r in rows])
    before = con.execute("SELECT * EXCLUDE (prompt) FROM candidates ORDER BY candidate_id").fetchall()
    con.close()

    w = open_workspace(tmp_path / "old")
    cur = w.cursor()
    assert cur.execute("SELECT * EXCLUDE (prompt_id) FROM candidates ORDER BY candidate_id").fetchall() == before
    assert sorted(cur.execute("SELECT prompt_id, prompt FROM prompts").fetchall()) == sorted(
        (prompt_id(f"Documento {k}\nJSON:"), f"Documento {k}\nJSON:") for k in range(3))
    assert get_candidate(w, "r:i1:2")["prompt"] == "Documento 1\nJSON:" and get_candidate(w, "r:i3:0")["prompt"] is None
    assert cur.execute("SELECT count(*) FROM candidates WHERE prompt_id IS NULL").fetchone()[0] == 3
    with pytest.raises(duckdb.ConstraintException):  # the rebuilt table kept its primary key
        cur.execute("INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, text) VALUES ('r:i0:0', 'r', 'd', 'i0', 0, 'x')")
    w.close()


def test_newer_schema_is_refused(tmp_path):
    w = open_workspace(tmp_path / "w")
    w.cursor().execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    w.close()
    with pytest.raises(WorkspaceError, match="newer"):
        open_workspace(tmp_path / "w")


def test_second_process_gets_a_clear_lock_error(ws):
    """DuckDB's single writer: another process is told who holds the file, without a traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "core", "status", "--workspace", str(ws.root), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "is open in process" in out.stderr and "one writer" in out.stderr
    import json
    import os

    assert str(os.getpid()) in json.loads(out.stdout.strip().splitlines()[-1])["error"]


def test_lock_error_in_process(ws, tmp_path):
    code = (
        "from core.store import open_workspace, WorkspaceLocked\n"
        f"try:\n    open_workspace({str(ws.root)!r})\nexcept WorkspaceLocked as e:\n    print('LOCKED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("LOCKED")


def test_register_model_validates_stage(ws):
    with pytest.raises(WorkspaceError, match="stage"):
        register_model(ws.cursor(), name="m", path="/x", stage="final")
    register_model(ws.cursor(), name="m", path="/x", family="qwen2", stage="dpo2", parent="p")
    assert list_models(ws.cursor())[0]["stage"] == "dpo2"


def test_next_step_follows_the_flow(demo_ws):
    c = counts(demo_ws.cursor())
    assert next_step(c)[0] == "Register a model"
    register_model(demo_ws.cursor(), name="m", path="/x", family="llama", stage="sft")
    assert next_step(counts(demo_ws.cursor()))[0] == "Sample candidates"
    assert next_step({**c, "items": 0})[0] == "Import documents"


def test_next_step_does_not_ask_to_judge_evaluation_outputs(demo_ws):
    from tests.review_data import add_review_run

    add_review_run(demo_ws, 2)  # 6 sampled candidates, each judged, mined to 4 pending pairs
    cur = demo_ws.cursor()
    cur.execute("INSERT INTO runs (run_id, kind, status, created_at) VALUES ('ev', 'eval', 'done', now())")
    cur.execute("""INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, text, created_at)
                   VALUES ('ev:1', 'ev', 'demo', 'demo-test-00000', 0, 'out', now())""")  # scored, never judged
    c = counts(cur)
    assert c["candidates"] > c["judged_candidates"] and c["sampled_candidates"] == c["judged_sampled"] == 6
    assert next_step(c) == ("Review pairs", "4 pairs wait for review.")


def test_item_search_is_a_literal_case_insensitive_substring_with_the_total(ws):
    """The Data page's search: what ILIKE '%q%' would find, with regex characters taken literally."""
    from core.steps.importer import ImportFields, import_records, validate
    from core.store.items import search_items

    texts = ["Parafuso a(b [x] 1.5*2", "PARAFUSO \\ fim", "porca $10 ^ok | x?", "Ação DESCRIÇÃO", "nada"] * 30
    rows = [(i, {"id": f"d-{i:03d}", "text": t, "reference": "{\"k\": \"Ref.Z\"}" if i % 7 == 0 else None}) for i, t in enumerate(texts)]
    import_records(ws, validate(iter(rows), Path("<t>"), ImportFields(), None), "docs", source="test")
    cur = ws.cursor()
    for q in ["parafuso", "a(b", "[x]", "1.5*2", "\\", "$10 ^", "| x?", "descrição", "AÇÃO", "ref.z", "d-01", "(?i)", ".*", "zzz"]:
        like = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        want = {r[0] for r in cur.execute(
            "SELECT item_id FROM items WHERE item_id ILIKE ? ESCAPE '\\' OR text ILIKE ? ESCAPE '\\' OR reference ILIKE ? ESCAPE '\\'",
            [f"%{like}%"] * 3).fetchall()}
        page, total = search_items(cur, dataset="docs", query=q, limit=10)
        assert total == len(want), q
        assert list(page["item_id"]) == sorted(want)[:10], q
    page, total = search_items(cur, dataset="docs", query="parafuso", limit=10, offset=1000)  # past the end
    assert page.empty and total == 60
    assert search_items(cur, dataset="docs", limit=5)[1] == 150 and "_total" not in search_items(cur, dataset="docs")[0]
