"""Page images end to end on a real tiny Gemma3-shaped VLM: loading, sampling (transformers and the
openai backend against a chat-only server), bad pages, judging, export, the EOS rule in DPO, and the
attractor's teacher-forced pass with every image input."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core import jobs
from core.demo.docs import build_demo_records
from core.images import ImageProblem, image_hash, load_image
from core.samplers.base import DecodingConfig, Request
from core.steps.importer import ImportFields, import_records, validate
from core.steps.sample import SampleConfig, run_summary, start_sampling
from core.store import WorkspaceError
from core.store.models import register_model
from tests.models import build_tiny_vlm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-vlm")


def fill_pages(ws, tmp_path: Path, n_train: int = 4, n_test: int = 0) -> list[dict]:
    records = build_demo_records(seed=0, n_train=n_train, n_validation=0, n_test=n_test, images_dir=tmp_path / "pages")
    items = validate(((i, r) for i, r in enumerate(records, 1)), Path("<demo>"), ImportFields(), None)
    import_records(ws, items, "demo", source="demo")
    return records


def cfg(model, **kw):
    return SampleConfig(model=model, dataset="demo", split="train",
                        decoding=DecodingConfig(n=1, max_new_tokens=12, seed=3, with_greedy=True), items_per_shard=2, **kw)


def test_load_image_bounds_checks_and_hashes(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), "white").save(big)
    img = load_image(big, max_pixels=1_000_000)
    assert img.width * img.height <= 1_000_000 and abs(img.width / img.height - 4 / 3) < 0.01
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageProblem, match="bad.png"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ImageProblem, match="missing"):
        load_image(tmp_path / "nope.png")
    assert image_hash(big) != image_hash(tmp_path / "bad.png") and image_hash(tmp_path / "nope.png") is None


def test_vlm_sampling_records_prompt_and_page_hash_and_skips_bad_pages(ws, tmp_path, tiny_vlm):
    records = fill_pages(ws, tmp_path)
    register_model(ws, name="vlm", path=str(tiny_vlm), family="gemma3", stage="sft")
    Path(records[1]["image"]).write_bytes(b"garbage")  # an unreadable page: that item only is skipped
    run_id = start_sampling(ws, cfg("vlm"))
    state = jobs.wait(ws, run_id)
    assert state.status == "done", jobs.read_log(ws, run_id)
    s = run_summary(ws, run_id)
    assert list(s["skipped"]) == [records[1]["id"]]
    assert records[1]["image"] in s["skipped"][records[1]["id"]]  # the reason names the file
    rows = ws.cursor().execute("SELECT item_id, p.prompt, image_hash FROM candidates JOIN prompts p USING (prompt_id) "
                               "WHERE run_id = ?", [run_id]).fetchall()
    assert len(rows) == 3 * 2
    assert ws.cursor().execute("SELECT count(*) FROM prompts").fetchone()[0] == 1  # every page got the same prompt: stored once
    by_id = {r["id"]: r for r in records}
    for item_id, prompt, h in rows:
        assert "<start_of_image>" in prompt and h == image_hash(by_id[item_id]["image"])


def test_image_choices_are_made_before_the_job_starts(ws, tmp_path, tiny_vlm, tiny_model):
    fill_pages(ws, tmp_path, n_train=2)
    register_model(ws, name="vlm", path=str(tiny_vlm))
    register_model(ws, name="text", path=str(tiny_model))
    with pytest.raises(WorkspaceError, match="text-only"):
        start_sampling(ws, cfg("text", images="on"))
    run_id = start_sampling(ws, cfg("text"))  # ignores the pages, with a warning on the run
    assert jobs.wait(ws, run_id).status == "done"
    assert "text-only" in run_summary(ws, run_id)["warnings"][0]
    ws.cursor().execute("UPDATE items SET image_path = NULL WHERE item_id = (SELECT min(item_id) FROM items)")
    with pytest.raises(WorkspaceError, match="reads page images"):
        start_sampling(ws, cfg("vlm"))


def test_openai_backend_sends_pages_to_a_chat_only_server(tmp_path, tiny_vlm, tiny_model):
    from core.samplers.openai import OpenAISampler
    from core.serve import CompletionsServer

    page = tmp_path / "p.png"
    Image.new("RGB", (320, 240), "white").save(page)
    for model, image in ((tiny_vlm, load_image(page)), (tiny_model, None)):
        server = CompletionsServer(str(model), port=0, model_name="m", routes=("chat",))
        server.start_background()
        try:
            s = OpenAISampler("m", f"http://127.0.0.1:{server.server_port}", retries=0)
            prompt = s.format_image_prompt("Transcreva.", "auto") if image else "nome:Ana\nJSON:"
            (gens,) = s.generate([Request(prompt, 2, False, 1, image)], DecodingConfig(max_new_tokens=6))
            assert isinstance(gens, list) and len(gens) == 2, gens
            assert all(g.finish_reason in ("stop", "length") for g in gens)
            if image is None:
                assert s.chat_only  # a text request moved to chat after the 404
        finally:
            server.shutdown()


def test_llm_judge_that_reads_images_sees_the_page(tmp_path, tiny_vlm):
    from core.judges.base import DEFAULT_RUBRIC, JudgeConfig
    from core.judges.llm import LLMJudge

    page = tmp_path / "p.png"
    Image.new("RGB", (200, 200), "white").save(page)
    judge = LLMJudge(JudgeConfig(judge="llm", judge_model=str(tiny_vlm), max_new_tokens=4, retries=0), list(DEFAULT_RUBRIC))
    prompt, image = judge._prompt({"candidate_id": "c", "text": "{}", "document": "", "image_path": str(page)})
    assert image is not None and "<start_of_image>" in prompt and "page in the image" in prompt
    out = judge.judge([{"candidate_id": "c", "text": "{}", "document": "", "image_path": str(tmp_path / "gone.png")}])
    assert "page is missing" in out[0].error


def test_dpo_on_a_vlm_keeps_the_eos_rule_in_the_text_and_never_precomputes(tmp_path, tiny_vlm):
    from transformers import AutoProcessor
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from core.loader import load_model
    from core.steps.train import DPORunConfig, train_dpo, vision_dpo_examples

    page = tmp_path / "p.png"
    Image.new("RGB", (200, 280), "white").save(page)
    proc = AutoProcessor.from_pretrained(tiny_vlm)
    prompt = "<start_of_image>\n\nTranscreva.\nJSON:"
    pairs = [{"prompt": prompt, "chosen": ' {"a":1}', "rejected": ' {"a":1,"a":1,"a":1', "rejected_cut_at_limit": True, "image_path": str(page)},
             {"prompt": prompt, "chosen": ' {"b":2}', "rejected": ' {"c":3}', "rejected_cut_at_limit": False, "image_path": str(page)}]
    examples = vision_dpo_examples(pairs, proc)
    eos = proc.tokenizer.eos_token_id
    batch = DataCollatorForVisionPreference(processor=proc)([dict(e) for e in examples])
    ids, mask = batch["input_ids"], batch["completion_mask"].bool()
    last = [row[m].tolist()[-1] for row, m in zip(ids, mask)]  # chosen 0, chosen 1, rejected 0, rejected 1
    assert last[0] == eos and last[1] == eos and last[2] != eos and last[3] == eos
    assert "pixel_values" in batch and "token_type_ids" in batch
    res = train_dpo(DPORunConfig(max_steps=2, per_device_train_batch_size=2, precompute_ref_log_probs=True, max_length=None),
                    pairs, tmp_path / "out", model=str(tiny_vlm))
    assert res.precomputed_ref is False and res.global_step == 2
    assert load_model(str(tmp_path / "out"), device="cpu").vision


DEMO_VLM = Path(__file__).resolve().parents[1] / "data" / "models" / "gemma3" / "sft"


@pytest.mark.skipif(not (DEMO_VLM / "config.json").exists(), reason="the demo VLM is not built")
def test_greedy_tokens_are_rank_one_with_every_image_input(tmp_path):
    from core.samplers.transformers import TransformersSampler
    from core.steps.attractor import AttractorError, token_probabilities

    records = build_demo_records(seed=0, n_train=0, n_validation=2, n_test=0, max_items=12, images_dir=tmp_path)
    s = TransformersSampler(str(DEMO_VLM), "cpu")
    prompt = s.format_image_prompt("Transcreva o documento acima em JSON.", "auto")
    for r in records:
        page = load_image(r["image"])
        (gens,) = s.generate([Request(prompt, 1, True, 0, page)], DecodingConfig(max_new_tokens=48))
        res = token_probabilities(str(DEMO_VLM), prompt, gens[0].text, "cpu", image=page)
        assert res["tokens"] and all(t["rank"] == 1 for t in res["tokens"]), [t["rank"] for t in res["tokens"]]
    with pytest.raises(AttractorError, match="page"):
        token_probabilities(str(DEMO_VLM), prompt, gens[0].text, "cpu")


@pytest.mark.skipif(not (DEMO_VLM / "config.json").exists(), reason="the demo VLM is not built")
def test_demo_vlm_reads_the_page(tmp_path):
    """Greedy outputs depend on the page: a blank page of the same size gives another output on most items."""
    from core.samplers.transformers import TransformersSampler

    records = build_demo_records(seed=0, n_train=0, n_validation=10, n_test=0, max_items=12, images_dir=tmp_path)
    s = TransformersSampler(str(DEMO_VLM), "cpu")
    prompt = s.format_image_prompt("Transcreva o documento acima em JSON.", "auto")
    dec = DecodingConfig(max_new_tokens=64)
    pages = [load_image(r["image"]) for r in records]
    real = s.generate([Request(prompt, 1, True, 0, p) for p in pages], dec)
    blank = s.generate([Request(prompt, 1, True, 0, Image.new("RGB", p.size, "white")) for p in pages], dec)
    differ = sum(a[0].text != b[0].text for a, b in zip(real, blank))
    assert differ >= 6, differ


def lb(ws: Path, *args: str) -> dict:
    """One `loopbreak` command as a user types it; its JSON summary."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "core", *args, "-w", str(ws), "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (DEMO_VLM / "config.json").exists(), reason="the demo VLM is not built")
def test_the_whole_loop_on_the_demo_vlm_from_the_cli(tmp_path):
    """demo → sample → judge → pairs → review → export → DPO → eval → report, every step with pages, as a
    user runs it (the judging run's id names its pairs everywhere after `pairs`)."""
    import duckdb
    import pyarrow.parquet as pq

    ws = tmp_path / "ws"
    assert lb(ws, "demo", "--n-train", "8", "--n-validation", "2", "--n-test", "3")["splits"]["train"] == 8
    s = lb(ws, "sample", "--model", "demo-gemma3-sft", "--dataset", "demo", "--split", "train", "--limit", "4", "--n", "4")
    assert s["status"] == "done" and s["candidates"] == 20 and not s["warnings"], s
    j = lb(ws, "judge", "--run", s["run_id"])
    assert j["judged"] == 20 and j["errors"] == 0
    p = lb(ws, "pairs", "--run", j["run_id"], "--min-margin", "0.01")
    assert p["pairs"] >= 1, p
    r = lb(ws, "review", "--run", j["run_id"], "--approve-all", "--reviewer", "ci")
    assert r["decided"] == p["pairs"]
    e = lb(ws, "export", "--run", j["run_id"], "--format", "parquet", "--out", str(tmp_path / "pairs.parquet"))
    assert e["pairs"] == p["pairs"] and e["images"] is True
    rows = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    assert all(row["images"][0]["bytes"].startswith(b"\x89PNG") and "<start_of_image>" in row["prompt"] for row in rows)
    t = lb(ws, "train", "dpo", "--base", "demo-gemma3-sft", "--pairs", str(tmp_path / "pairs.parquet"), "--max-steps", "2",
           "--name", "vlm-dpo")
    assert t["status"] == "done" and t["model"]["family"] == "gemma3" and t["model"]["stage"] == "dpo", t
    ev = lb(ws, "eval", "-m", "demo-gemma3-sft", "-m", "vlm-dpo", "-d", "demo", "--split", "test", "--limit", "2", "--n-sampled", "0")
    assert set(ev["status"].values()) == {"done"}
    stages = [row["stage_label"] for row in lb(ws, "report")["families"]["gemma3"]["stages"]]
    assert stages == ["SFT", "SFT+DPO"]
    with duckdb.connect(str(ws / "loopbreak.duckdb"), read_only=True) as con:
        seen = con.execute("SELECT count(*), count(image_hash) FROM candidates WHERE run_id IN (?, ?, ?)",
                           [s["run_id"], *ev["runs"]]).fetchone()
    assert seen == (20 + 2 + 2, 20 + 2 + 2)  # every candidate, eval included, was sampled from its page
