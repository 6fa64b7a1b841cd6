"""The attractor view: how likely the model finds each token of its own output, loop span marked.

A degenerate candidate is the model's own text, so it can be scored teacher-forced: feed the prompt
and the completion through the model once and read, for every completion token, the probability
the model gives it after everything before it. Outside a loop the probabilities wander; inside it,
once the unit has appeared a time or two, the model predicts its own repetition with probability
close to 1 — the loop is an attractor (the seeds' figure 2), and this shows it for the user's model.

The prompt is the candidate's stored ``prompt`` column: the exact string the sampler fed the model
(chat template already applied, see ``core.sampling``), tokenized with ``add_special_tokens=False``
as the sampler does; the completion is tokenized on its own and appended, as generation appended
it. Re-tokenizing text can split it differently from the ids the model emitted (rarely, with
byte-level BPE); a greedy candidate whose tokens are nearly all rank 1 shows the two agree.

One forward pass per window, no gradients, log-softmax over the vocabulary a chunk of positions at
a time (a 150k vocabulary times 8k positions does not fit in memory at once). A prompt plus
completion longer than the model's context is scored with a sliding window (each later token sees
at least ``context - stride`` tokens before it) and the result says so in its ``notes``.
Loaded models are kept in a small LRU per (path, device), so a page can call this repeatedly.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from pathlib import Path

from core import loader
from core.loader import model_context  # the context rule lives in the loader
from core.policy.prompts import DEFAULT_INSTRUCTION, build_prompt
from core.store import runs
from core.store.items import get_item

MODEL_CACHE_SIZE = 2  # models kept loaded; a third evicts the least recently used
CHUNK_POSITIONS = 512  # positions whose full-vocabulary log-softmax is held at once


class AttractorError(Exception):
    """The candidate cannot be scored here (no local model, no tokenizer…): a message for the user."""


# ---------------------------------------------------------------- loading (LRU per path and device)

_models: OrderedDict[tuple, tuple] = OrderedDict()
_models_lock = threading.Lock()


def _signature(path: str) -> tuple:
    """Modification times of the model's files: a model re-saved at the same path is reloaded."""
    p = Path(path)
    if not p.is_dir():
        return ()
    return tuple(sorted((f.name, f.stat().st_mtime_ns) for f in p.iterdir()
                        if f.suffix in (".json", ".safetensors", ".bin", ".model")))


def _resolve_device(device: str) -> str:
    try:
        return loader.resolve_device(device)
    except loader.LoadError as e:
        raise AttractorError(str(e)) from None


def load_model(model_path: str, device: str = "auto"):
    """(model, tokenizer, device, processor), loaded once per (path, device, files) through the one
    model loader (``core.loader``: dtype, device, pad/EOS ids; a VLM's processor) and kept in a small LRU."""
    device = _resolve_device(device)
    key = (str(Path(model_path).resolve()) if Path(model_path).exists() else model_path, device, _signature(model_path))
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        try:
            lm = loader.load_model(model_path, device=device, purpose="generate")
        except loader.LoadError as e:
            raise AttractorError(str(e)) from None
        _models[key] = (lm.model, lm.tokenizer, device, lm.processor if lm.vision else None)
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)
        return _models[key]


def clear_model_cache() -> None:
    with _models_lock:
        _models.clear()


# ---------------------------------------------------------------- tokenization with character offsets


def _normalize_offsets(offsets: list[tuple[int, int]], n_chars: int) -> list[tuple[int, int]]:
    """Contiguous, non-overlapping spans covering [0, n_chars): a gap (a space a tokenizer leaves
    out of its offsets) joins the next token; a character split over two tokens (a multi-byte
    character in byte-level BPE) belongs to the first, the second gets an empty span."""
    out, prev = [], 0
    for s, e in offsets:
        e = max(prev, min(int(e), n_chars))
        out.append((prev, e))
        prev = e
    if out:
        out[-1] = (out[-1][0], n_chars)
    return out


def _decode_offsets(tokenizer, ids: list[int], text: str) -> list[tuple[int, int]]:
    """Offsets by decoding growing prefixes (slow tokenizers without offset mapping)."""
    ends, prev = [], 0
    for i in range(len(ids)):
        piece = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        end = len(piece.rstrip("\ufffd")) if text.startswith(piece.rstrip("\ufffd")) else prev
        ends.append(max(prev, end))
        prev = ends[-1]
    return list(zip([0] + ends[:-1], ends))


def tokenize_completion(tokenizer, completion: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the completion and each token's (start, end) characters in it."""
    try:
        enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError, KeyError):
        ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        offsets = _decode_offsets(tokenizer, ids, completion)
    return ids, _normalize_offsets(offsets, len(completion))


# ---------------------------------------------------------------- scoring


def _split_head(model):
    """(base model, output head) when the logits are exactly head(last hidden state), else None.

    Then the log-softmax can run a chunk of positions at a time. Models that scale or cap their
    logits after the head (Gemma 2's soft-capping, Cohere's logit scale…) take the plain forward.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return None
    cfg = model.config
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale", "logit_softcapping"):
        if getattr(cfg, name, None) not in (None, 1, 1.0):
            return None
    return base, head


def _windows(n: int, start: int, context: int | None, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each forward pass; positions [start, n) are scored."""
    if context is None or n <= context:
        return [(0, n, start)]
    out, t = [], start
    while t < n:
        if not out and t < context:
            b, e = 0, context
        else:
            e = min(n, t + stride)
            b = max(0, e - context)
        out.append((b, e, t))
        t = e
    return out


def _image_inputs(image_inputs: dict, length: int, device: str, dtype) -> dict:
    """A VLM's image inputs for a sequence of ``length`` tokens: per-token ones (``token_type_ids``,
    ``mm_token_type_ids``) extended with zeros over the completion, pixel values in the weights' dtype."""
    import torch

    out = {}
    for k, v in image_inputs.items():
        if k in ("token_type_ids", "mm_token_type_ids"):
            v = torch.cat([v[:, :length], torch.zeros((1, max(0, length - v.shape[1])), dtype=v.dtype)], dim=1)
        out[k] = v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)
    return out


def _score(model, ids: list[int], start: int, context: int | None, stride: int, device: str,
           eos_id: int | None, split: bool = True, chunk: int = CHUNK_POSITIONS, image_inputs: dict | None = None) -> dict[str, list]:
    """p, rank, entropy (nats) and p(EOS) of ids[t] given ids[:t] (within its window), t ≥ start.

    With ``image_inputs`` (a VLM's page: pixel values and the rest) there is one pass from the first
    token, cut at the context: a sliding window would drop the image tokens from view."""
    import torch

    parts = _split_head(model) if split and not image_inputs else None
    p_all, rank_all, ent_all, eos_all = [], [], [], []
    if image_inputs:
        windows = [(0, min(len(ids), context or len(ids)), start)]
        dtype = next(model.parameters()).dtype
    else:
        windows = _windows(len(ids), start, context, stride)
    with torch.inference_mode():
        for b, e, t in windows:
            x = torch.tensor([ids[b:e]], device=device)
            targets = torch.tensor(ids[t:e], device=device)
            if parts:
                base, head = parts
                out = base(input_ids=x, use_cache=False)
                hidden = (out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])[0, t - 1 - b: e - 1 - b]
                logit_chunks = (head(hidden[c:c + chunk]) for c in range(0, hidden.shape[0], chunk))
            else:
                extra = _image_inputs(image_inputs, e, device, dtype) if image_inputs else {}
                logits = model(input_ids=x, use_cache=False, **extra).logits[0, t - 1 - b: e - 1 - b]
                logit_chunks = (logits[c:c + chunk] for c in range(0, logits.shape[0], chunk))
            pos = 0
            for logits in logit_chunks:
                logits = logits.float()
                tgt = targets[pos:pos + logits.shape[0]]
                logp = torch.log_softmax(logits, dim=-1)
                lp = logp.gather(1, tgt[:, None])[:, 0]
                p_all += lp.exp().tolist()
                rank_all += ((logits > logits.gather(1, tgt[:, None])).sum(dim=1) + 1).tolist()
                ent_all += (-(logp.exp() * logp).sum(dim=1)).tolist()
                eos_all += (logp[:, eos_id].exp().tolist() if eos_id is not None else [None] * logits.shape[0])
                pos += logits.shape[0]
    return {"p": p_all, "rank": rank_all, "entropy": ent_all, "p_eos": eos_all, "windows": len(windows)}


# ---------------------------------------------------------------- loops onto tokens


def _loop_dicts(loops) -> list[dict]:
    out = []
    for loop in loops or []:
        d = loop.to_dict() if hasattr(loop, "to_dict") else dict(loop)
        if int(d["end"]) > int(d["start"]):
            out.append(d)
    return out


def token_range(tokens: list[dict], start: int, end: int) -> tuple[int, int]:
    """Tokens [i, j) that overlap characters [start, end) of the completion (empty spans included)."""
    ends = [t["end"] for t in tokens]
    starts = [t["start"] for t in tokens]
    i = bisect.bisect_right(ends, start)
    j = bisect.bisect_left(starts, end)
    return i, max(i, j)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def map_loops(tokens: list[dict], loops) -> list[dict]:
    """The detector's loops (character spans) as token ranges, with mean p over the loop, over its
    repeats (after the first unit) and per whole unit (≈ for a templated loop, whose units vary in length)."""
    out = []
    p = [t["p"] for t in tokens]
    for d in _loop_dicts(loops):
        start, end = int(d["start"]), int(d["end"])
        period = max(1, int(d.get("period") or end - start))
        i, j = token_range(tokens, start, end)
        first_repeat = token_range(tokens, min(end, start + period), end)[0] if start + period < end else j
        per_repeat = []
        for k in range(max(1, (end - start) // period)):  # whole units: a cut last one would read as a fall
            a, b = token_range(tokens, start + k * period, min(end, start + (k + 1) * period))
            m = _mean(p[a:b])
            if m is not None:
                per_repeat.append(round(m, 4))
        out.append({
            "start": start, "end": end, "period": period, "repeats": float(d.get("repeats") or (end - start) / period),
            "templated": bool(d.get("templated")), "token_start": i, "token_end": j, "first_repeat_token": first_repeat,
            "mean_p": _mean(p[i:j]), "mean_p_repeats": _mean(p[first_repeat:j]), "per_repeat": per_repeat,
        })
    return out


def summarize(tokens: list[dict], loops: list[dict]) -> dict:
    """Mean p of the whole completion, inside the loop span(s), over their repeats, before the first
    loop and outside every loop; with the token counts behind each."""
    p = [t["p"] for t in tokens]
    inside = [False] * len(p)
    repeats = [False] * len(p)
    for lp in loops:
        for k in range(lp["token_start"], lp["token_end"]):
            inside[k] = True
        for k in range(lp["first_repeat_token"], lp["token_end"]):
            repeats[k] = True
    first = min((lp["token_start"] for lp in loops), default=len(p))
    groups = {
        "all": p,
        "loop": [x for x, m in zip(p, inside) if m],
        "repeats": [x for x, m in zip(p, repeats) if m],
        "before": p[:first],
        "outside": [x for x, m in zip(p, inside) if not m],
    }
    out = {}
    for name, values in groups.items():
        m = _mean(values)
        out[f"mean_p_{name}"] = None if m is None else round(m, 4)
        out[f"n_{name}"] = len(values)
    out["rank1_share"] = round(sum(t["rank"] == 1 for t in tokens) / len(tokens), 4) if tokens else None
    return out


# ---------------------------------------------------------------- the entry point


def token_probabilities(model_path: str, prompt: str, completion: str, device: str = "auto", *,
                        loops=None, finish_reason: str | None = None, context: int | None = None,
                        stride: int | None = None, image=None) -> dict:
    """Teacher-forced probability of every completion token after the prompt and the tokens before it.

    ``prompt`` is the exact string the model was fed (the candidate's ``prompt`` column). ``loops``
    are the detector's spans (``candidate["loops"]``; detected here when None). ``context`` overrides
    the model's context length; ``stride`` is the sliding window's step (default half the context).

    Returns a JSON-serialisable dict: ``tokens`` (index, text, start, end — characters of the
    completion, contiguous and covering it — p, rank, entropy in nats, p_eos), ``loops`` (each span
    with its token range and mean p), ``summary`` (mean p inside vs before/outside the loops),
    ``notes`` (sliding window, re-tokenization), and the counts and context used.

    A vision-language model needs ``image`` (the page, a PIL image): the prompt goes through its
    processor, and every image input it gives (pixel values, token types, grids) goes into the pass;
    without them the probabilities would be plausible and wrong.
    """
    model, tokenizer, dev, processor = load_model(model_path, device)
    notes: list[str] = []
    image_inputs = None
    if processor is not None:
        if image is None:
            raise AttractorError("this model reads page images and the candidate's page is not available")
        enc = processor(images=[[image]], text=[prompt], return_tensors="pt", add_special_tokens=False)
        prompt_ids = enc["input_ids"][0].tolist()
        image_inputs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask") and hasattr(v, "is_floating_point")}
    else:
        prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
    if not prompt_ids:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if bos is None:
            raise AttractorError("the prompt is empty and the tokenizer has no BOS token to start from")
        prompt_ids = [bos]
        notes.append("no prompt: the completion was scored after the BOS token alone")
    ids, offsets = tokenize_completion(tokenizer, completion)
    if tokenizer.decode(ids, skip_special_tokens=True) != completion:
        notes.append("the tokenizer does not reproduce the text exactly; offsets are approximate")
    ctx = context or model_context(model)
    stride = max(1, stride or (ctx // 2 if ctx else 1))
    eos = tokenizer.eos_token_id
    scored = _score(model, prompt_ids + ids, len(prompt_ids), ctx, stride, dev, eos, image_inputs=image_inputs) if ids else \
        {"p": [], "rank": [], "entropy": [], "p_eos": [], "windows": 0}
    if image_inputs and len(scored["p"]) < len(ids):
        notes.append(f"prompt + completion exceed the model's context of {ctx:,}: the first {len(scored['p']):,} completion "
                     "tokens are scored (a sliding window would drop the page from view)")
        ids, offsets = ids[:len(scored["p"])], offsets[:len(scored["p"])]
    if scored["windows"] > 1:
        notes.append(
            f"prompt + completion = {len(prompt_ids) + len(ids):,} tokens exceed the model's context of {ctx:,}: "
            f"scored in {scored['windows']} sliding windows, each later token seeing the {ctx - stride:,}+ tokens "
            "before it (the prompt drops out of view)"
        )
    elif ctx and len(prompt_ids) >= ctx:
        notes.append(f"the prompt alone ({len(prompt_ids):,} tokens) fills the context of {ctx:,}")
    tokens = [
        {"index": k, "text": completion[s:e] if e > s else tokenizer.decode([tid]), "start": s, "end": e,
         "p": round(p, 6), "rank": int(r), "entropy": round(h, 4), "p_eos": None if pe is None else round(pe, 6)}
        for k, (tid, (s, e), p, r, h, pe) in enumerate(zip(ids, offsets, scored["p"], scored["rank"], scored["entropy"], scored["p_eos"]))
    ]
    if loops is None:
        from core.policy.detect import analyze

        loops = analyze(completion, finish_reason).loops
    mapped = map_loops(tokens, loops)
    return {
        "model_path": str(model_path), "device": dev, "n_prompt_tokens": len(prompt_ids), "n_tokens": len(tokens),
        "context": ctx, "windows": scored["windows"], "tokens": tokens, "loops": mapped,
        "summary": summarize(tokens, mapped), "notes": notes,
    }


def reading(result: dict) -> str:
    """One sentence that reads the figure: mean p inside the loop against before it (or outside)."""
    s = result["summary"]
    if not result["loops"]:
        return f"No loop in this text: the model gives its own tokens p≈{s['mean_p_all']:.2f} on average."
    inside = s["mean_p_repeats"] if s["mean_p_repeats"] is not None else s["mean_p_loop"]
    where = "its repeats" if s["mean_p_repeats"] is not None else "the loop"
    if s["n_before"]:
        text = f"Inside the loop the model gives {where} p≈{inside:.2f} on average vs {s['mean_p_before']:.2f} before it"
    elif s["n_outside"]:
        text = f"Inside the loop the model gives {where} p≈{inside:.2f} on average vs {s['mean_p_outside']:.2f} outside it"
    else:
        text = f"The whole text is a loop; the model gives {where} p≈{inside:.2f} on average"
    climb = result["loops"][0]["per_repeat"]
    if len(climb) >= 3:
        shown = climb[:3] + ([climb[-1]] if len(climb) > 3 else [])
        text += " (per repeat: " + " → ".join(f"{x:.2f}" for x in shown[:3]) + (f" … {shown[-1]:.2f}" if len(climb) > 3 else "") + ")"
    return text + "."


# ---------------------------------------------------------------- a stored candidate: which model, which prompt


def hub_cached(model_id: str) -> bool:
    """Whether a hub id's config is in the local Hugging Face cache (loadable without the hub)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:
        return False


def candidate_model(ws, candidate: dict) -> dict:
    """The model that sampled a candidate — run → registered model path (or the path the job used) —
    and whether it can be scored here: ``{name, path, backend, local, reason}``."""
    run = runs.sampled_model(ws, candidate["run_id"])
    if run is None:
        return {"name": None, "path": None, "backend": candidate.get("backend"), "local": False,
                "reason": f"run {candidate['run_id']} is not in this workspace, so its model is unknown"}
    name = run["name"]
    backend = candidate.get("backend") or run["backend"] or "transformers"
    path = run["registered_path"] or run["model_path"] or name
    info = {"name": name, "path": path, "backend": backend, "local": False, "reason": None,
            "instruction": run["instruction"] or DEFAULT_INSTRUCTION}
    if not path:
        info["reason"] = f"run {candidate['run_id']} records no model"
    elif (Path(path) / "config.json").exists():
        info["local"] = True
    elif Path(path).exists() or str(path).startswith(("/", ".", "~")):
        info["reason"] = f"the model {name!r} is registered at {path}, which is not a model folder on this machine"
    elif hub_cached(path):
        info["local"] = True
    else:
        via = f" (sampled through the {backend} backend)" if backend == "openai" else ""
        info["reason"] = (f"the model {name!r}{via} is not on this machine: {path!r} is neither a local folder nor a hub "
                          "id in the local cache, so its token probabilities cannot be computed here")
    return info


def candidate_attractor(ws, candidate: dict, device: str = "auto") -> dict:
    """Token probabilities of a stored candidate under the model that sampled it.

    Raises AttractorError with a message for the user when the model is not here."""
    info = candidate_model(ws, candidate)
    if not info["local"]:
        raise AttractorError(info["reason"])
    prompt, notes = candidate.get("prompt"), []
    if not prompt:
        item = get_item(ws.cursor(), candidate["dataset"], candidate["item_id"])
        if item is None:
            raise AttractorError("this candidate has no stored prompt and its item is gone")
        prompt = build_prompt(item["text"], info["instruction"])
        notes.append("no prompt stored with this candidate: rebuilt from the item and the run's instruction (no chat template)")
    image = None
    if loader.is_vision(loader.load_config(info["path"])):
        from core.images import ImageProblem, image_hash, load_image

        item = get_item(ws.cursor(), candidate["dataset"], candidate["item_id"]) or {}
        try:
            image = load_image(item.get("image_path"))
        except ImageProblem as e:
            raise AttractorError(f"this model reads page images and the candidate's page cannot be used: {e}") from None
        if candidate.get("image_hash") and image_hash(item.get("image_path")) != candidate["image_hash"]:
            notes.append("the page image file changed since this candidate was sampled: the scores are for the new page")
    result = token_probabilities(info["path"], prompt, candidate["text"], device, loops=candidate.get("loops") or [],
                                 finish_reason=candidate.get("finish_reason"), image=image)
    result["model"] = info["name"]
    result["notes"] = notes + result["notes"]
    return result
