"""Throughput of the degeneration detector against zlib level 6 on the same corpus, same run.

Builds a deterministic mixed corpus of >= 50 MB in memory (clean JSON invoices, markdown tables,
CSV, lists, prose, CJK, and loops of every kind: templated rows, exact objects, single characters,
whitespace), then times, chunk by chunk and alternating so that both share the machine's noise:
`analyze(text, finish_reason, config=DetectConfig(metrics=False))` (loops everywhere + verdict),
and `zlib.compress(text.encode(), 6)`. Also: the whole `loopbreak detect` path (JSONL in, analyze with
metrics, JSONL out) in one process and in one per core, the verdict alone (`is_degenerate`), full analyze with
metrics on a sample, and how time grows from 1x to 10x text, for the corpus and for single long
texts (best of 3 runs each). Run: `.venv/bin/python bench/bench_detect.py [--mb 50]` (e.g. `--mb 10` while
iterating; the reported ratio needs >= 50). Last lines: `RATIO detector/zlib6 = x` and the CLI path's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import time
import zlib

from core.policy.detect import DetectConfig, analyze, detect_jsonl, is_degenerate

WORDS = ("parafuso sextavado porca arruela chapa galvanizada tubo cabo flexível fio cobre tinta acrílica lixa broca "
         "serra martelo alicate chave fenda fita isolante disjuntor tomada lâmpada luva cola silicone rebite").split()
FAST = DetectConfig(metrics=False)


def _item(rnd: random.Random, desc: str | None = None, q: int | None = None) -> str:
    q = rnd.randint(1, 60) if q is None else q
    price = rnd.randint(100, 99999) / 100
    return json.dumps({"descricao": desc or " ".join(rnd.sample(WORDS, 2)).capitalize(), "quantidade": q,
                       "valor_unitario": f"{price:.2f}".replace(".", ","), "total": f"{q * price:.2f}".replace(".", ",")},
                      ensure_ascii=False)


def _invoice(rnd: random.Random, items: list[str]) -> str:
    head = {"tipo": "nota_fiscal", "emitente": {"nome": f"Empresa {rnd.randint(1, 999)} LTDA",
                                                "cnpj": f"{rnd.randint(10, 99)}.{rnd.randint(100, 999)}.{rnd.randint(100, 999)}/0001-{rnd.randint(10, 99)}"}}
    return json.dumps(head, ensure_ascii=False)[:-1] + ',"itens":[' + ",".join(items)


def candidate(rnd: random.Random) -> tuple[str, str]:
    """One (text, finish_reason) of the mix: about 70% clean, 30% with a loop."""
    kind = rnd.random()
    if kind < 0.40:
        return _invoice(rnd, [_item(rnd) for _ in range(rnd.randint(3, 40))]) + "]}", "stop"
    if kind < 0.50:
        return _invoice(rnd, [_item(rnd) for _ in range(40)])[: rnd.randint(2000, 4000)], "length"
    if kind < 0.58:
        rows = "".join(f"| {' '.join(rnd.sample(WORDS, 3))} | {rnd.randint(1, 99)} | {rnd.randint(1, 999)},{rnd.randint(0, 99):02d} |\n"
                       for _ in range(rnd.randint(5, 60)))
        return "| Descrição | Qtd | Valor |\n|---|---|---|\n" + rows, "stop"
    if kind < 0.63:
        return "".join(f"{' '.join(rnd.sample(WORDS, 2))};{rnd.randint(1, 9999)};São Paulo\n" for _ in range(80)), "stop"
    if kind < 0.68:
        return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(100, 800))) + ".", "stop"
    if kind < 0.70:
        return "".join(rnd.choice("发票供应商买方商品金额核对无误付款条件交货日期") for _ in range(rnd.randint(300, 1500))), "stop"
    if kind < 0.82:  # the SFT model's loop: same row, numbers change, to the limit
        items = [_item(rnd) for _ in range(rnd.randint(1, 8))]
        desc = " ".join(rnd.sample(WORDS, 2)).capitalize()
        items += [_item(rnd, desc, q) for q in range(rnd.randint(1, 5), 200)]
        return _invoice(rnd, items)[: rnd.randint(3000, 8000)], "length"
    if kind < 0.88:
        obj = _item(rnd) + ","
        return (_invoice(rnd, [_item(rnd)]) + "," + obj * 100)[: rnd.randint(3000, 8000)], "length"
    if kind < 0.94:
        return " ".join(rnd.sample(WORDS, 8)) + rnd.choice(["a", "\n", " ", "-", "0", "ha "]) * rnd.randint(500, 4000), "length"
    text = " ".join(rnd.sample(WORDS, 10)) + ". " + ("Não foi possível ler o campo. " * rnd.randint(5, 20)) + "Fim."
    return text, "stop"


def build_corpus(mb: float, seed: int = 0) -> list[tuple[str, str]]:
    """Deterministic corpus of at least `mb` MB of UTF-8 (a pool of distinct candidates, cycled)."""
    rnd = random.Random(seed)
    pool = [candidate(rnd) for _ in range(4000)]
    corpus, size, i = [], 0, 0
    while size < mb * 1e6:
        text, finish = pool[i % len(pool)]
        corpus.append((text, finish))
        size += len(text.encode())
        i += 1
    return corpus


def timed(corpus, chunk: int = 500) -> tuple[float, float, int, int]:
    """Seconds of the detector and of zlib-6 over the corpus, alternating chunk by chunk."""
    t_det = t_zlib = 0.0
    degenerate = loops = 0
    for k in range(0, len(corpus), chunk):
        part = corpus[k:k + chunk]
        t0 = time.perf_counter()
        for text, finish in part:
            r = analyze(text, finish, config=FAST)
            degenerate += r.degenerate
            loops += len(r.loops)
        t1 = time.perf_counter()
        for text, _ in part:
            zlib.compress(text.encode(), 6)
        t2 = time.perf_counter()
        t_det += t1 - t0
        t_zlib += t2 - t1
    return t_det, t_zlib, degenerate, loops


def timeit_zlib(text: str) -> float:
    t0 = time.perf_counter()
    zlib.compress(text.encode(), 6)
    return time.perf_counter() - t0


def _seconds(items: list[tuple[str, str]]) -> float:
    """Seconds of analyze (metrics off) over items."""
    t0 = time.perf_counter()
    for text, finish in items:
        analyze(text, finish, config=FAST)
    return time.perf_counter() - t0


def cli_path(corpus, workers: int) -> float:
    """Seconds of ``loopbreak detect``'s path (parse JSONL, analyze with metrics, write JSONL)."""
    lines = [json.dumps({"id": i, "text": t, "finish_reason": f}, ensure_ascii=False) + "\n" for i, (t, f) in enumerate(corpus)]
    t0 = time.perf_counter()
    detect_jsonl(lines, io.StringIO(), workers=workers)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (>= 50 for the reported ratio)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    corpus = build_corpus(args.mb)
    mb = sum(len(t.encode()) for t, _ in corpus) / 1e6
    print(f"corpus: {len(corpus):,} candidates, {mb:.1f} MB (built in {time.perf_counter() - t0:.1f} s)")

    t_det, t_zlib, degenerate, loops = timed(corpus)
    print(f"detector (analyze, metrics off): {mb / t_det:7.1f} MB/s  ({degenerate:,} degenerate, {loops:,} loops)")
    print(f"zlib.compress level 6:           {mb / t_zlib:7.1f} MB/s")

    t_zlib_all = sum(timeit_zlib(t) for t, _ in corpus)
    cores = os.cpu_count() or 1
    cli = {w: cli_path(corpus, w) for w in sorted({1, cores})}
    for w, dt in cli.items():
        print(f"loopbreak detect, {w} process{'es' if w > 1 else '  '}: {mb / dt:7.1f} MB/s  ({t_zlib_all / dt:.2f}x zlib-6 on one core; "
              f"spans, verdict, seq-rep/distinct-n and compression ratio, JSON in and out)")

    sample = corpus[: max(1, len(corpus) // 10)]
    smb = sum(len(t.encode()) for t, _ in sample) / 1e6
    t0 = time.perf_counter()
    for text, finish in sample:
        is_degenerate(text, finish)
    print(f"verdict only (is_degenerate):    {smb / (time.perf_counter() - t0):7.1f} MB/s")
    t0 = time.perf_counter()
    for text, finish in sample:
        analyze(text, finish)
    print(f"analyze with metrics:            {smb / (time.perf_counter() - t0):7.1f} MB/s  (includes a zlib-6 pass)")

    print("growth (time relative to 1x):")
    rnd = random.Random(1)
    clean = _invoice(rnd, [_item(rnd) for _ in range(1500)])  # ~150 KB, one long clean text
    looped = _invoice(rnd, [_item(rnd) for _ in range(5)]) + "," + ",".join(_item(rnd, "Parafuso sextavado", q) for q in range(1, 1500))
    base_corpus = corpus[: len(corpus) // 10]
    for label, make in (
        ("corpus (x candidates)", lambda f: base_corpus * f),
        ("single clean text", lambda f: [(clean * f, "length")]),
        ("single looped text", lambda f: [(looped * f, "length")]),
    ):
        row, base = [], None
        for factor in (1, 2, 5, 10):
            items = make(factor)
            dt = min(_seconds(items) for _ in range(3))  # best of 3: the machine is shared
            base = base or dt
            row.append(f"{factor}x {dt / base:5.2f}")
        print(f"  {label:<24} " + "  ".join(row))
    print(f"RATIO detector/zlib6 = {t_zlib / t_det:.2f}")
    print(f"RATIO detect-cli({cores} processes)/zlib6 = {t_zlib_all / cli[cores]:.2f}")


if __name__ == "__main__":
    main()
