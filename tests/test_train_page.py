"""The Train page (AppTest): the form's errors, live curves and the pathology warning of a run."""

import json
import time

from core import jobs
from core.store.models import register_model
from tests.test_app import run_app


def _fake_finished_run(ws, chosen):
    """A train job folder as a worker leaves it mid-run: metrics.jsonl with falling chosen log-probs."""
    run_id = jobs.create_job(ws, "train", {"config": {"method": "dpo", "params": {}}, "base": {"name": "m"}})
    d = ws.jobs_dir / run_id
    with (d / "metrics.jsonl").open("w") as f:
        for i, c in enumerate(chosen, 1):
            f.write(json.dumps({"step": i, "loss": 0.7 - 0.01 * i, "rewards/margins": 0.1 * i, "rewards/accuracies": 0.5,
                                "logps/chosen": c, "logps/rejected": c - 10, "learning_rate": 5e-5, "grad_norm": 3.0}) + "\n")
    (d / "status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom", "finished_at": time.time()}))
    return run_id


def test_curves_and_the_falling_chosen_warning(demo_ws):
    _fake_finished_run(demo_ws, [-7.6, -9.0, -12.5, -15.0, -19.8, -26.6])
    at = run_app(demo_ws, "views/train.py")
    assert any("Chosen log-probs are falling" in w.value for w in at.warning)
    assert any("boom" in e.value for e in at.error)  # the failure's reason is on the page
    assert at.get("plotly_chart")
    assert [m.value for m in at.metric][:1] == ["6"]


def test_a_bad_base_is_reported_and_the_page_keeps_working(demo_ws, tiny_model):
    register_model(demo_ws.cursor(), name="tiny-sft", path=str(tiny_model), family="llama", stage="sft")
    at = run_app(demo_ws, "views/train.py")
    base = next(b for b in at.selectbox if b.label == "Base model")
    base.set_value(base.options[-1])
    assert at.text_input[0].label == "Model folder"
    at.text_input[0].input("/no/such/model")
    at.button[0].click().run()
    assert not at.exception and any("/no/such/model' does not exist" in e.value for e in at.error)
    assert not jobs.list_runs(demo_ws, "train")


def test_the_base_defaults_to_the_model_that_sampled_the_pairs_and_its_learning_rate(demo_ws):
    from core.steps.train_job import TINY_DPO_LEARNING_RATE
    from tests.review_data import add_review_run

    register_model(demo_ws.cursor(), name="a-vanilla", path="data/models/llama/vanilla", family="llama", stage="vanilla")
    register_model(demo_ws.cursor(), name="other-sft", path="data/models/qwen2/sft", family="qwen2", stage="sft")
    add_review_run(demo_ws, 2, model="gpt2-sft")  # its pairs were sampled from gpt2-sft
    demo_ws.cursor().execute("UPDATE models SET path = 'data/models/gpt2/sft' WHERE name = 'gpt2-sft'")
    demo_ws.cursor().execute("UPDATE pairs SET status = 'approved'")
    at = run_app(demo_ws, "views/train.py")
    assert not at.exception
    base = next(b for b in at.selectbox if b.label == "Base model")
    assert base.value.startswith("gpt2-sft")  # on-policy, not the first SFT model of the list
    lr = next(n for n in at.number_input if n.label == "Learning rate")
    assert lr.value == TINY_DPO_LEARNING_RATE and "Suggested for this model" in lr.help
