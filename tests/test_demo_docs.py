"""The demo document task: deterministic, well-formed, noisy only when asked."""
from __future__ import annotations

import json
import random

from faker import Faker

from core.demo.docs import build_demo_records, make_document, render_noisy_text, to_reference
from core.policy.prompts import DEFAULT_INSTRUCTION, build_prompt, completion_for


def _small(**kw):
    args = dict(seed=3, n_train=40, n_validation=10, n_test=20)
    args.update(kw)
    return build_demo_records(**args)


def test_deterministic_same_args_same_records():
    assert _small() == _small()
    assert _small(seed=4) != _small()


def test_splits_counts_and_ids():
    recs = _small()
    by_split = {s: [r for r in recs if r["split"] == s] for s in ("train", "validation", "test")}
    assert [len(by_split[s]) for s in ("train", "validation", "test")] == [40, 10, 20]
    assert by_split["test"][0]["id"] == "demo-test-00000"
    assert len({r["id"] for r in recs}) == len(recs)
    # a split does not depend on the size of the others
    more = _small(n_train=80)
    assert [r for r in more if r["split"] == "test"] == by_split["test"]


def test_references_parse_and_match_kind():
    recs = _small()
    kinds = {r["kind"] for r in recs}
    assert kinds == {"form", "invoice"}
    for r in recs:
        assert set(r) >= {"id", "split", "kind", "text", "reference", "n_items"}
        doc = json.loads(r["reference"])
        assert ": " not in r["reference"].replace('": "', "")  # compact separators
        if r["kind"] == "invoice":
            assert doc["tipo"] == "nota_fiscal"
            assert 1 <= r["n_items"] == len(doc["itens"]) <= 30
            assert "cnpj" in doc["emitente"]
            for it in doc["itens"]:
                assert set(it) == {"descricao", "quantidade", "valor_unitario", "total"}
        else:
            assert doc["tipo"] == "formulario" and r["n_items"] == 0
            assert {"nome", "cpf", "rg", "endereco", "cep", "cidade", "uf", "telefone", "data"} <= set(doc)


def test_item_range_and_max_items():
    recs = build_demo_records(seed=1, n_train=200, n_validation=0, n_test=0)
    counts = [r["n_items"] for r in recs if r["kind"] == "invoice"]
    assert min(counts) >= 1 and max(counts) <= 30 and max(counts) > 20
    small = build_demo_records(seed=1, n_train=100, n_validation=0, n_test=0, max_items=5)
    assert max(r["n_items"] for r in small) <= 5


def test_noise_zero_is_clean_and_noise_changes_text():
    clean = _small(noise=0.0)
    noisy = _small(noise=0.6)
    assert [r["reference"] for r in clean] == [r["reference"] for r in noisy]
    assert sum(a["text"] != b["text"] for a, b in zip(clean, noisy)) > 0.9 * len(clean)
    # with no noise every value appears verbatim in the text, after "key:" or at a row start
    for r in clean:
        doc = json.loads(r["reference"])
        if r["kind"] == "form":
            assert f"nome:{doc['nome']}" in r["text"]
            assert f"cpf:{doc['cpf']}" in r["text"]
        else:
            it = doc["itens"][0]
            assert f"\n{it['descricao']}|{it['quantidade']}|{it['valor_unitario']}|{it['total']}" in r["text"]


def test_lower_level_api():
    fake = Faker("pt_BR")
    fake.seed_instance(7)
    doc = make_document(random.Random(7), fake, "invoice", n_items=12)
    assert doc.n_items == 12
    assert json.loads(to_reference(doc))["itens"][11]["descricao"]
    t1 = render_noisy_text(doc, 0.5, random.Random(1))
    t2 = render_noisy_text(doc, 0.5, random.Random(1))
    assert t1 == t2


def test_images_written_when_asked(tmp_path):
    recs = build_demo_records(seed=0, n_train=2, n_validation=1, n_test=1, images_dir=tmp_path)
    for r in recs:
        p = tmp_path / f"{r['id']}.png"
        assert r["image"] == str(p) and p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "image" not in _small()[0]


def test_prompt_format():
    p = build_prompt("nome:Ana")
    assert p.endswith("JSON:") and not p.endswith(" ")
    assert DEFAULT_INSTRUCTION in p and p.startswith("nome:Ana")
    assert completion_for('{"a":1}') == ' {"a":1}'
