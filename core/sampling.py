"""Sampling: N candidates per item from a model, as a resumable background job.

One sampler interface, three backends, chosen by name with a plain dict:

* ``transformers`` — ``model.generate`` on CPU or GPU; a shard's items are decoded together
  (greedy rows in one call, sampled rows with ``num_return_sequences=n`` in another), left padding,
  and a loop-aware ``StoppingCriteria`` for early stopping;
* ``vllm`` — offline ``LLM.generate`` with ``SamplingParams(n=…, seed=…)``, all of a shard's items
  in one call (GPU machines; imported only when chosen);
* ``openai`` — any OpenAI-compatible ``/v1/completions`` server (``vllm serve`` fleets, hosted
  APIs), with a concurrency limit, retries with backoff and timeouts.

Determinism, so a killed job resumes to exactly the candidates of an uninterrupted run: every
item gets its own seed, derived from (seed, item id); the transformers backend seeds a batch with
its first item's seed, and a resumed job re-forms the same shards, hence the same batches.
The greedy decode, when asked for, is candidate 0 of the item: loops often appear only there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from core.config import option
from core.detect import DetectConfig, analyze, tail_loop
from core.metrics import quality
from core.prompts import DEFAULT_INSTRUCTION, build_prompt
from core.store import now

BACKENDS = ("transformers", "vllm", "openai")


@dataclass
class DecodingConfig:
    """How candidates are decoded; recorded with every candidate."""

    n: int = option(4, "sampled candidates per item")
    temperature: float = option(0.8, "sampling temperature (> 0)")
    top_p: float = option(0.95, "nucleus sampling: keep the smallest token set with this much probability")
    top_k: int = option(0, "keep only the k most likely tokens (0 = off)")
    max_new_tokens: int = option(512, "token limit per candidate; a loop runs until it")
    seed: int = option(0, "base seed; each item's seed derives from it and the item id")
    with_greedy: bool = option(True, "add the greedy decode as one more candidate: loops often appear only there")
    early_stop: bool = option(False, "stop a candidate once its tail is a confirmed loop (finish_reason 'repetition')")


@dataclass
class SampleConfig:
    """A sampling run: which model, which items, which backend. The job's spec holds exactly this."""

    model: str = option("", "registered model name, local path, or hub id")
    dataset: str = option("", "dataset whose items are sampled")
    split: str | None = option(None, "split of the dataset (all splits when empty)")
    limit: int | None = option(None, "sample only the first N items: the way to try a setup before the full run")
    backend: str = option("transformers", "transformers (CPU/GPU), vllm (GPU), or openai (any OpenAI-compatible server)")
    base_url: str | None = option(None, "server URL for the openai backend, e.g. http://127.0.0.1:8000")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the server's API key, if it needs one")
    server_model: str | None = option(None, "model name the server expects (default: the model's name)")
    instruction: str = option(DEFAULT_INSTRUCTION, "instruction appended to each document")
    chat_template: str = option("auto", "auto: use the tokenizer's chat template when it has one; on; off")
    items_per_shard: int = option(8, "items per output shard: the unit of progress and of resume")
    concurrency: int = option(8, "requests in flight (openai backend)")
    timeout_s: float = option(120.0, "per-request timeout in seconds (openai backend)")
    retries: int = option(3, "retries per request after a timeout or a 5xx (openai backend)")
    device: str = option("auto", "transformers device: auto, cpu, cuda")
    decoding: DecodingConfig = field(default_factory=DecodingConfig, metadata={"help": "decoding parameters"})

    @classmethod
    def from_dict(cls, d: dict) -> "SampleConfig":
        names = {f.name for f in fields(cls)}
        dec = DecodingConfig(**{k: v for k, v in (d.get("decoding") or {}).items() if k in {f.name for f in fields(DecodingConfig)}})
        return cls(**{k: v for k, v in d.items() if k in names and k != "decoding"}, decoding=dec)


@dataclass
class Request:
    prompt: str
    n: int
    greedy: bool
    seed: int


@dataclass
class Generation:
    text: str
    n_tokens: int
    finish_reason: str  # stop | length | repetition
    latency_s: float


class SamplerError(Exception):
    """A sampler that cannot work at all (no model, no tokenizer, server unreachable): the job fails."""


class ItemSkipped(Exception):
    """One item cannot be sampled (e.g. prompt longer than the context): it is skipped with the reason."""


def item_seed(seed: int, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:4], "big")


def requests_for(prompt: str, decoding: DecodingConfig, seed: int) -> list[Request]:
    reqs = [Request(prompt, 1, True, seed)] if decoding.with_greedy else []
    if decoding.n > 0:
        reqs.append(Request(prompt, decoding.n, False, seed))
    return reqs


# ---------------------------------------------------------------- transformers


class _LoopStop:
    """A StoppingCriteria: every `every` tokens, rows whose tail is a confirmed loop stop here.

    Cheap per call: a row that emitted EOS is remembered from the one new token of each step, and
    only the last `tail_tokens` tokens of a row are decoded for the check (``tail_loop`` looks at
    a bounded window anyway), so a check costs O(window), not O(length).
    """

    def __init__(self, tokenizer, prompt_len: int, eos_ids: set[int], every: int = 8,
                 config: DetectConfig | None = None, tail_tokens: int = 2048):
        self.tokenizer, self.prompt_len, self.eos_ids, self.every = tokenizer, prompt_len, eos_ids, every
        self.config = config or DetectConfig(metrics=False)
        self.tail_tokens = tail_tokens
        self.stopped: set[int] = set()
        self.ended: set[int] = set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new = input_ids.shape[1] - self.prompt_len
        if new > 0:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if token in self.eos_ids:
                    self.ended.add(row)  # finished by itself; padding follows
        for row in self.stopped:
            done[row] = True
        if new == 0 or new % self.every:
            return done
        start = max(self.prompt_len, input_ids.shape[1] - self.tail_tokens)
        for row in range(input_ids.shape[0]):
            if row in self.stopped or row in self.ended:
                continue
            if tail_loop(self.tokenizer.decode(input_ids[row, start:].tolist(), skip_special_tokens=True), self.config):
                self.stopped.add(row)
                done[row] = True
        return done


class TransformersSampler:
    name = "transformers"

    def __init__(self, model_path: str, device: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        except Exception as e:
            raise SamplerError(f"cannot load a tokenizer from {model_path!r}: {e}") from None
        try:
            self.model = AutoModelForCausalLM.from_pretrained(model_path)
        except Exception as e:
            raise SamplerError(f"cannot load a causal LM from {model_path!r}: {e}") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and torch.cuda.is_bf16_supported():
            self.model = self.model.to(torch.bfloat16)
        self.model.to(device).eval()
        self.device = device
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.context = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config, "n_positions", None)

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        use = chat_template == "on" or (chat_template == "auto" and getattr(self.tokenizer, "chat_template", None))
        if not use:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    max_batch_rows = 64  # rows (requests x n) decoded together

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        """Requests of one kind (greedy, or n samples) share a `generate` call.

        A small model's per-step overhead dominates on CPU, so decoding a shard's items together is
        the big speed-up. A batch is deterministic given its requests (seeded with its first
        request's seed), and a resumed job re-forms the same shards, so it reproduces the same
        candidates. A prompt that would overrun the context with the full token limit is decoded
        alone, with the limit clamped, so it does not shorten the others'.
        """
        out: list = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            n_tok = len(self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"])
            if self.context and n_tok >= self.context:
                out[i] = ItemSkipped(f"prompt of {n_tok} tokens does not fit the model's context of {self.context}")
                continue
            fits = not self.context or n_tok + decoding.max_new_tokens <= self.context
            groups.setdefault((r.greedy, r.n, fits), []).append(i)
        for (_, n, fits), idx in groups.items():
            size = max(1, self.max_batch_rows // max(1, n)) if fits else 1
            for s in range(0, len(idx), size):
                chunk = idx[s : s + size]
                for i, gens in zip(chunk, self._batch([requests[i] for i in chunk], decoding)):
                    out[i] = gens
        return out

    def _batch(self, reqs: list[Request], decoding: DecodingConfig) -> list[list[Generation]]:
        import torch
        from transformers import StoppingCriteriaList

        enc = self.tokenizer([r.prompt for r in reqs], return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_len = enc["input_ids"].shape[1]
        max_new = decoding.max_new_tokens
        if self.context:
            max_new = min(max_new, self.context - prompt_len)
        stop = _LoopStop(self.tokenizer, prompt_len, self.eos_ids) if decoding.early_stop else None
        torch.manual_seed(reqs[0].seed)
        kwargs = dict(do_sample=False) if reqs[0].greedy else dict(
            do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k or None
        )
        n = reqs[0].n
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **{k: v.to(self.device) for k, v in enc.items()}, max_new_tokens=max_new,
                num_return_sequences=n, pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([stop]) if stop else None, **kwargs,
            )
        latency = time.perf_counter() - t0
        gens = []
        for row, ids in enumerate(out[:, prompt_len:].tolist()):
            end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
            if stop and row in stop.stopped:
                while ids and ids[-1] == self.tokenizer.pad_token_id:
                    ids.pop()
                reason = "repetition"
            elif end is not None:
                ids, reason = ids[: end + 1], "stop"
            else:
                while ids and ids[-1] == self.tokenizer.pad_token_id:
                    ids.pop()
                reason = "length" if len(ids) >= max_new else "stop"
            gens.append(Generation(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), reason, latency))
        return [gens[i * n : (i + 1) * n] for i in range(len(reqs))]


# ---------------------------------------------------------------- vLLM (GPU machines)


class VLLMSampler:
    name = "vllm"

    def __init__(self, model_path: str, device: str = "auto"):
        try:
            from vllm import LLM
        except ImportError:
            raise SamplerError("the vllm backend needs `pip install -e '.[vllm]'` on a GPU machine") from None
        try:
            self.llm = LLM(model=model_path)
        except Exception as e:
            raise SamplerError(f"vLLM cannot load {model_path!r}: {e}") from None
        self.tokenizer = self.llm.get_tokenizer()

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        return TransformersSampler.format_prompt(self, prompt, chat_template)

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        from vllm import SamplingParams

        extra = {}
        if decoding.early_stop:
            from vllm.sampling_params import RepetitionDetectionParams

            extra["repetition_detection"] = RepetitionDetectionParams(max_pattern_size=64, min_pattern_size=1, min_count=8)
        params = [
            SamplingParams(
                n=r.n, seed=r.seed, max_tokens=decoding.max_new_tokens,
                temperature=0.0 if r.greedy else decoding.temperature,
                top_p=1.0 if r.greedy else decoding.top_p,
                top_k=decoding.top_k if decoding.top_k > 0 and not r.greedy else -1, **extra,
            )
            for r in requests
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        latency = time.perf_counter() - t0
        reason = {"stop": "stop", "length": "length"}
        return [
            [Generation(c.text, len(c.token_ids), reason.get(c.finish_reason, "repetition"), latency) for c in o.outputs]
            for o in outs
        ]


# ---------------------------------------------------------------- OpenAI-compatible servers


class OpenAISampler:
    name = "openai"

    def __init__(self, model: str, base_url: str | None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, retries: int = 3):
        import requests

        if not base_url:
            raise SamplerError("the openai backend needs a base URL (e.g. http://127.0.0.1:8000)")
        self.url = base_url.rstrip("/") + ("/completions" if base_url.rstrip("/").endswith("/v1") else "/v1/completions")
        self.model, self.concurrency, self.timeout_s, self.retries = model, concurrency, timeout_s, retries
        self.session = requests.Session()
        key = os.environ.get(api_key_env)
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        return prompt  # the completions endpoint takes the prompt as the model was fine-tuned on it

    def _post(self, req: Request, decoding: DecodingConfig) -> list[Generation] | ItemSkipped:
        import requests

        body = {
            "model": self.model, "prompt": req.prompt, "n": req.n, "max_tokens": decoding.max_new_tokens,
            "temperature": 0.0 if req.greedy else decoding.temperature,
            "top_p": 1.0 if req.greedy else decoding.top_p, "seed": req.seed,
        }
        if decoding.top_k > 0 and not req.greedy:
            body["top_k"] = decoding.top_k
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            t0 = time.perf_counter()
            try:
                r = self.session.post(self.url, json=body, timeout=self.timeout_s)
            except requests.ConnectionError as e:
                last = f"cannot reach {self.url} ({type(e).__name__})"
                continue
            except requests.Timeout:
                last = f"no answer from {self.url} within {self.timeout_s:g} s"
                continue
            if r.status_code >= 500 or r.status_code == 429:
                last = f"{self.url} answered {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                return ItemSkipped(f"{self.url} refused the request ({r.status_code}): {r.text[:300]}")
            latency = time.perf_counter() - t0
            try:
                choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
                return [
                    Generation(c["text"], int((c.get("usage") or {}).get("completion_tokens") or 0) or _count(c),
                               {"stop": "stop", "length": "length"}.get(c.get("finish_reason"), "repetition"), latency)
                    for c in choices
                ]
            except (ValueError, KeyError, TypeError) as e:
                last = f"malformed answer from {self.url}: {e}"
                continue
        if last.startswith("cannot reach"):
            raise SamplerError(last)
        return ItemSkipped(f"gave up after {self.retries + 1} attempts: {last}")

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda r: self._post(r, decoding), requests))


def _count(choice: dict) -> int:
    """Token count when the server does not report usage per choice: logprobs if given, else 0."""
    lp = choice.get("logprobs") or {}
    return len(lp.get("tokens") or [])


def make_sampler(cfg: SampleConfig, model_path: str):
    if cfg.backend not in BACKENDS:
        raise SamplerError(f"unknown backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
    if cfg.backend == "openai":
        return OpenAISampler(cfg.server_model or cfg.model, cfg.base_url, cfg.api_key_env, cfg.concurrency, cfg.timeout_s, cfg.retries)
    if not Path(model_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SamplerError(f"model {model_path!r} is not a local path and the hub is offline")
    return {"transformers": TransformersSampler, "vllm": VLLMSampler}[cfg.backend](model_path, cfg.device)


# ---------------------------------------------------------------- the job


def candidate_rows(run_id: str, item: dict, prompt: str, reqs: list[Request], results: list, cfg: SampleConfig, backend: str) -> tuple[list[dict], str | None]:
    """Candidates of one item (greedy first), each with the detector's verdict; or the skip reason."""
    rows, index = [], 0
    for req, gens in zip(reqs, results):
        if isinstance(gens, ItemSkipped):
            return [], str(gens)
        for g in gens:
            det = analyze(g.text, g.finish_reason)
            decoding = {**asdict(cfg.decoding), "greedy": req.greedy}
            rows.append({
                "candidate_id": f"{run_id}:{item['item_id']}:{index}", "run_id": run_id,
                "dataset": item["dataset"], "item_id": item["item_id"], "sample_index": index,
                "prompt": prompt, "text": g.text, "n_tokens": g.n_tokens, "finish_reason": g.finish_reason,
                "backend": backend, "decoding": json.dumps(decoding), "seed": req.seed,
                "latency_s": g.latency_s, "degenerate": det.degenerate, "has_loop": det.has_loop,
                "loops": json.dumps([lp.to_dict() for lp in det.loops], ensure_ascii=False),
                "metrics": json.dumps(det.metrics), "created_at": now(),
                "quality": None if item.get("reference") is None else quality(g.text.strip(), item["reference"].strip()),
            })
            index += 1
    return rows, None


def run_sample_job(ctx) -> None:
    """The worker: sample every item not yet in a shard, a shard of items at a time."""
    import pyarrow.parquet as pq

    cfg = SampleConfig.from_dict(ctx.spec["config"])
    items = pq.read_table(ctx.dir / "items.parquet").to_pylist()
    done_ids: set[str] = set()
    prev = ctx.read_shards("candidates", columns=["item_id"])
    if prev is not None:
        done_ids = set(prev.column("item_id").to_pylist())
    skipped_path = ctx.dir / "skipped.json"
    skipped: dict[str, str] = {}  # tried again on resume: a server that was down may be up now
    todo = [it for it in items if it["item_id"] not in done_ids]
    total = len(items)
    ctx.progress(total - len(todo), total, "loading the model")
    sampler = make_sampler(cfg, ctx.spec["model_path"])
    ctx.log(f"{len(todo)} of {total} items to sample with {sampler.name} ({len(done_ids)} already done)")
    done = total - len(todo)
    step = max(1, cfg.items_per_shard)
    for start in range(0, total, step):
        # Shards are cut from the whole item list, not from what is left: a resumed job decodes the same
        # batches as an uninterrupted one, even when an item skipped earlier (too long) is tried again.
        batch = [it for it in items[start:start + step] if it["item_id"] not in done_ids]
        if not batch:
            continue
        prompts = [sampler.format_prompt(build_prompt(it["text"], cfg.instruction), cfg.chat_template) for it in batch]
        per_item = [requests_for(p, cfg.decoding, item_seed(cfg.decoding.seed, it["item_id"])) for it, p in zip(batch, prompts)]
        flat = [r for reqs in per_item for r in reqs]
        results = sampler.generate(flat, cfg.decoding)
        rows, pos = [], 0
        for it, prompt, reqs in zip(batch, prompts, per_item):
            item_rows, reason = candidate_rows(ctx.run_id, it, prompt, reqs, results[pos:pos + len(reqs)], cfg, sampler.name)
            pos += len(reqs)
            if reason:
                skipped[it["item_id"]] = reason
                ctx.log(f"skipped item {it['item_id']}: {reason}")
            rows += item_rows
        ctx.write_shard("candidates", rows)
        skipped_path.write_text(json.dumps(skipped, ensure_ascii=False))
        done += len(batch)
        ctx.progress(done, total, f"{len(skipped)} skipped" if skipped else "")
    if skipped and len(skipped) == total:
        raise SamplerError(f"every item was skipped; first reason: {next(iter(skipped.values()))}")


# ---------------------------------------------------------------- writer side (the app or the CLI)


def start_sampling(ws, cfg: SampleConfig, run_id: str | None = None) -> str:
    """Resolve the model, freeze the item list into the job folder, create the run and launch it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core import jobs
    from core.store import WorkspaceError, resolve_model

    if cfg.backend not in BACKENDS:
        raise WorkspaceError(f"unknown backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
    if cfg.decoding.n < 0 or (cfg.decoding.n == 0 and not cfg.decoding.with_greedy):
        raise WorkspaceError("ask for at least one candidate per item (n ≥ 1, or the greedy decode)")
    if cfg.decoding.max_new_tokens < 1:
        raise WorkspaceError("max new tokens must be at least 1")
    model = resolve_model(ws.cursor(), cfg.model, need_local=cfg.backend != "openai")
    items = select_items(ws, cfg.dataset, cfg.split, cfg.limit)
    run_id = jobs.create_job(
        ws, "sample", {"config": asdict(cfg), "model_path": model["path"], "model_info": model},
        model=model["name"], dataset=cfg.dataset, split=cfg.split, run_id=run_id,
    )
    pq.write_table(pa.Table.from_pylist(items), ws.jobs_dir / run_id / "items.parquet")
    jobs.launch(ws, run_id)
    return run_id


def select_items(ws, dataset: str, split: str | None, limit: int | None) -> list[dict]:
    from core.store import WorkspaceError

    sql = "SELECT dataset, item_id, text, reference FROM items WHERE dataset = ?"
    params: list = [dataset]
    if split:
        sql += " AND split = ?"
        params.append(split)
    sql += " ORDER BY item_id"
    if limit:
        sql += " LIMIT ?"
        params.append(int(limit))
    rows = ws.cursor().execute(sql, params).fetchall()
    if not rows:
        raise WorkspaceError(f"no items in dataset {dataset!r}" + (f" split {split!r}" if split else "") + ": import documents first")
    return [{"dataset": d, "item_id": i, "text": t, "reference": r} for d, i, t, r in rows]


def run_summary(ws, run_id: str) -> dict:
    """Candidates, items, degeneration and finish reasons of one sampling run."""
    cur = ws.cursor()
    n, items, degenerate, looped, tokens = cur.execute(
        "SELECT count(*), count(DISTINCT item_id), count(*) FILTER (degenerate), count(*) FILTER (has_loop), "
        "coalesce(avg(n_tokens), 0) FROM candidates WHERE run_id = ?", [run_id],
    ).fetchone()
    reasons = dict(cur.execute(
        "SELECT finish_reason, count(*) FROM candidates WHERE run_id = ? GROUP BY 1 ORDER BY 1", [run_id]
    ).fetchall())
    skipped_path = ws.jobs_dir / run_id / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    return {
        "run_id": run_id, "candidates": n, "items": items, "degenerate": degenerate,
        "degeneration_rate": degenerate / n if n else 0.0, "with_loops": looped,
        "mean_tokens": round(float(tokens), 1), "finish_reasons": reasons, "skipped": skipped,
    }


def list_candidates(ws, run_id: str, only_degenerate: bool = False, limit: int = 500):
    """The run's candidates for the table on the Sample page (newest items last).

    The page's rows are picked on narrow columns first, then only their texts are read (by primary
    key): a preview column in the ordered query read every text of the run (2.3 s at 800k).
    """
    cur = ws.cursor()
    ids = [r[0] for r in cur.execute(
        "SELECT candidate_id FROM candidates WHERE run_id = ?" + (" AND degenerate" if only_degenerate else "")
        + " ORDER BY item_id, sample_index LIMIT ?", [run_id, limit]).fetchall()]
    return cur.execute(
        "SELECT candidate_id, item_id, sample_index, degenerate, has_loop, finish_reason, n_tokens, "
        "coalesce(chars, length(text)) AS chars, left(replace(text, chr(10), ' '), 100) AS preview FROM candidates "
        f"WHERE candidate_id IN ({', '.join('?' * len(ids)) or 'NULL'}) ORDER BY item_id, sample_index", ids).df()


def get_candidate(ws, candidate_id: str) -> dict | None:
    cur = ws.cursor()
    row = cur.execute("SELECT * FROM candidates WHERE candidate_id = ?", [candidate_id]).fetchone()
    if row is None:
        return None
    cand = dict(zip([d[0] for d in cur.description], row))
    for key in ("loops", "metrics", "decoding"):
        cand[key] = json.loads(cand[key]) if cand[key] else ({} if key != "loops" else [])
    return cand
