"""`loopbreak` (also `python -m core`): the same steps as the app, headless.

Every command accepts `--json` and then prints a machine-readable summary as its LAST line of
stdout; progress bars go to stderr. A problem the user can act on (a malformed file, a locked
workspace) is printed as one clear line, exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from core.config import BoolFlag, HelpFormatter, add_flags, args_values, config_from_args
from core.store import WorkspaceError, counts, open_workspace


def _emit(args, summary: dict, human: str) -> None:
    """Print the human line, or with --json the summary as the last line of stdout."""
    if getattr(args, "json", False):
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        print(human)


def cmd_status(args) -> int:
    from core import jobs

    ws = open_workspace(args.workspace)
    jobs.sync_runs(ws)  # ingest finished jobs (and register models that train jobs saved)
    c = counts(ws.cursor())
    lines = [f"workspace {ws.root}"] + [f"  {k:<18} {v}" for k, v in c.items()]
    _emit(args, {"workspace": str(ws.root), **c}, "\n".join(lines))
    return 0


def cmd_import(args) -> int:
    from core.steps.importer import ImportFields, import_file

    fields = config_from_args(ImportFields, args)
    ws = open_workspace(args.workspace)
    result = import_file(ws, args.file, args.dataset, split=args.split, fields=fields, fmt=args.format)
    splits = ", ".join(f"{k}: {v}" for k, v in sorted(result.splits.items()))
    _emit(
        args, result.to_dict(),
        f"Imported {result.new} new items into {result.dataset!r} ({result.unchanged} unchanged; {splits}).",
    )
    return 0


def cmd_model_add(args) -> int:
    from core.store.models import register_model, resolve_model

    ws = open_workspace(args.workspace)
    cur = ws.cursor()
    path = resolve_model(cur, args.path, need_local=False)["path"]
    register_model(cur, name=args.name, path=path, family=args.family, stage=args.stage, parent=args.parent)
    _emit(args, {"name": args.name, "path": path, "family": args.family, "stage": args.stage, "parent": args.parent},
          f"Registered {args.name} ({args.family or '?'} · {args.stage or '?'}) at {path}.")
    return 0


def cmd_model_list(args) -> int:
    from core.store.models import list_models

    models = list_models(open_workspace(args.workspace).cursor())
    lines = [f"{m['name']:<28} {m['family'] or '-':<12} {m['stage'] or '-':<8} {m['path']}" for m in models]
    _emit(args, {"models": models}, "\n".join(lines) or "No models registered.")
    return 0


def cmd_demo(args) -> int:
    from tqdm import tqdm

    from core.demo.docs import build_demo_records
    from core.demo.models import DEMO_MAX_ITEMS
    from core.steps.importer import ImportFields, import_records, validate

    ws = open_workspace(args.workspace)
    with tqdm(total=1, desc="demo documents", file=sys.stderr, disable=args.json) as bar:
        records = build_demo_records(
            seed=args.seed, n_train=args.n_train, n_validation=args.n_validation, n_test=args.n_test,
            noise=args.noise, images_dir=(ws.images_dir / "demo") if args.images else None,
            max_items=DEMO_MAX_ITEMS,  # the demo models' context holds tables up to this size
        )
        bar.update()
    items = validate(((i, r) for i, r in enumerate(records, 1)), Path("<demo>"), ImportFields(), None)
    result = import_records(ws, items, "demo", source=f"demo seed={args.seed} noise={args.noise}")
    models: list[str] = []
    if not args.no_models:
        from core.demo.models import register_demo_models

        models = register_demo_models(ws, Path(args.models_dir) if args.models_dir else None)
    summary = {"workspace": str(ws.root), "dataset": "demo", **result.to_dict(), "models": models}
    _emit(
        args, summary,
        f"Demo workspace ready at {ws.root}: {result.rows} documents ({result.new} new), {len(models)} models registered.",
    )
    return 0


def cmd_demo_measure(args) -> int:
    """Measure the shipped demo models again through the product's sampler (no retraining)."""
    from core.demo.models import DEFAULT_MODELS_DIR, FAMILIES, measure_demo_models

    families = [f.strip() for f in (args.families or ",".join(FAMILIES)).split(",") if f.strip()]
    out = Path(args.out) if args.out else DEFAULT_MODELS_DIR
    try:
        res = measure_demo_models(out, families, quiet=args.json)
    except FileNotFoundError as e:
        raise WorkspaceError(str(e)) from None
    lines = [f"  {f:<6} quality {r['old']['quality']:.3f} → {r['new']['quality']:.3f}  degenerate "
             f"{r['old']['degenerate']} → {r['new']['degenerate']}/{r['new']['n']}" for f, r in res.items()]
    _emit(args, {"out": str(out.resolve()), "families": res}, "\n".join([f"Demo models in {out.resolve()}, SFT on validation:"] + lines))
    return 0


def cmd_demo_build(args) -> int:
    from core.demo.models import DEFAULT_MODELS_DIR, FAMILIES, DemoBuildConfig, build_demo_models

    families = [f.strip() for f in (args.families or ",".join(FAMILIES)).split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise WorkspaceError(f"Unknown demo families {', '.join(unknown)}: use {', '.join(FAMILIES)}.")
    out = Path(args.out) if args.out else DEFAULT_MODELS_DIR
    manifest = build_demo_models(out, config_from_args(DemoBuildConfig, args, families=families), quiet=False)
    per_family = {}
    for f in families:
        e = manifest["families"][f]
        v = e["validation"]
        per_family[f] = {
            "architecture": e["architecture"], "n_params": e["n_params"],
            "vanilla": str((out / e["vanilla"]["path"]).resolve()), "sft": str((out / e["sft"]["path"]).resolve()),
            "sft_steps": e["sft"]["steps"],
            "quality": v["quality"], "degeneration_rate": v["degeneration_rate"], "degenerate": v["degenerate"],
            "n": v["n"], "degeneration_ci95": v["degeneration_ci95"], "valid_json": v["valid_json"],
            "build_seconds": e["build_seconds"],
        }
    summary = {"out": str(out.resolve()), "seed": args.seed, "max_new_tokens": manifest["max_new_tokens"],
               "build_seconds": manifest["build_seconds"], "families": per_family}
    lines = [f"Demo models in {out.resolve()} ({manifest['build_seconds']:.0f}s; greedy, max_new_tokens={manifest['max_new_tokens']}):"]
    for f, s in per_family.items():
        lines.append(
            f"  {f:<6} SFT validation quality {s['quality']:.3f}  degeneration {s['degenerate']}/{s['n']} "
            f"({100 * s['degeneration_rate']:.1f}%)"
        )
    _emit(args, summary, "\n".join(lines))
    return 0


def cmd_detect(args) -> int:
    from core.policy.detect import DetectConfig, detect_jsonl

    config = config_from_args(DetectConfig, args)
    workers = args.workers or os.cpu_count() or 1

    stats: dict = {}
    try:
        src = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    except OSError as e:
        raise WorkspaceError(f"cannot read {args.file}: {e.strerror}") from None
    with src:
        errors = detect_jsonl(src, sys.stdout, err=sys.stderr, stats=stats, config=config, workers=workers)
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"{stats['lines']} lines: {stats['degenerate']} degenerate"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(stats['by_kind'].items()))})" if stats["by_kind"] else "")
            + f", {stats['loops']} loops, {stats['errors']} errors",
            file=sys.stderr,
        )
    return 1 if errors else 0


def _follow(ws, run_id: str, quiet: bool):
    """Wait for a job with a tqdm bar on stderr, ingesting as it goes; Ctrl-C cancels the job."""
    from tqdm import tqdm

    from core import jobs

    bar = tqdm(total=None, unit="item", file=sys.stderr, disable=quiet, desc=run_id)

    def show(p: dict) -> None:
        bar.total = p.get("total")
        bar.n = p.get("done", 0)
        bar.set_postfix_str(p.get("message", ""), refresh=False)
        bar.refresh()

    try:
        state = jobs.wait(ws, run_id, show)
    except KeyboardInterrupt:
        jobs.cancel(ws, run_id)
        state = jobs.wait(ws, run_id)
    bar.close()
    return state


def _job_result(args, ws, run_id: str, summary: dict, human: str) -> int:
    from core import jobs

    (state,) = jobs.sync_runs(ws, [run_id])
    status = "failed" if state.status == "died" else state.status
    summary = {"run_id": run_id, "status": status, "error": state.error, **summary}
    if status != "done":
        print(f"error: run {run_id} {status}: {state.error} (log: {ws.jobs_dir / run_id / 'log.txt'})", file=sys.stderr)
    _emit(args, summary, human if status == "done" else f"Run {run_id} {status}.")
    return 0 if status == "done" else 1


def cmd_sample(args) -> int:
    from core.steps.sample import SampleConfig, run_summary, start_sampling

    ws = open_workspace(args.workspace)
    cfg = config_from_args(SampleConfig, args)
    run_id = start_sampling(ws, cfg, launch=not args.prepare_only)
    if args.prepare_only:
        return _prepared(args, ws, [run_id])
    _follow(ws, run_id, args.json)
    s = run_summary(ws, run_id)
    return _job_result(
        args, ws, run_id, s,
        f"Run {run_id}: {s['candidates']} candidates for {s['items']} items, {s['degenerate']} degenerate "
        f"({s['degeneration_rate']:.1%}), {len(s['skipped'])} items skipped.",
    )


def _prepared(args, ws, run_ids: list[str]) -> int:
    """What --prepare-only prints: the job folders, and how to run each as K workers."""
    dirs = [str(ws.jobs_dir / r) for r in run_ids]
    _emit(args, {"runs": run_ids, "status": "queued", "job_dirs": dirs},
          "Prepared " + ", ".join(run_ids) + ". Run each folder as K workers (K GPUs, or a scheduler's array job), "
          "one command per worker k = 0…K-1:\n" + "\n".join(f"  loopbreak job run {d} --shard k/K" for d in dirs)
          + "\nA killed worker resumes by running its command again. The app (or `loopbreak status`) ingests the shards.")
    return 0


def cmd_eval(args) -> int:
    from core import jobs
    from core.steps.evaluate import EvalConfig, eval_results, start_eval

    ws = open_workspace(args.workspace)
    cfg = config_from_args(EvalConfig, args)
    run_ids = start_eval(ws, cfg, launch=not args.prepare_only)
    if args.prepare_only:
        return _prepared(args, ws, run_ids)
    try:
        for run_id in run_ids:
            _follow(ws, run_id, args.json)
    except KeyboardInterrupt:
        for run_id in run_ids:
            jobs.cancel(ws, run_id)
        raise
    states = jobs.sync_runs(ws, run_ids)
    rows = [r for r in eval_results(ws) if r["run_id"] in run_ids]
    failed = [s for s in states if s.status != "done"]
    for s in failed:
        print(f"error: run {s.run_id} {s.status}: {s.error} (log: {s.dir / 'log.txt'})", file=sys.stderr)
    human = "\n".join(f"{r['model']:<28} {r['decoding']:<8} degenerate {r['degenerate']}/{r['candidates']} "
                      f"({100 * r['rate']:.1f}%, 95% CI {100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}%)  "
                      f"quality {r['quality'] if r['quality'] is not None else '–'}  mean tokens {r['mean_tokens']}  [{r['run_id']}]"
                      for r in rows) or "No results."
    _emit(args, {"runs": run_ids, "status": {s.run_id: s.status for s in states}, "results": rows}, human)
    return 1 if failed else 0


def cmd_report(args) -> int:
    from core import jobs
    from core.steps.evaluate import format_report, report

    ws = open_workspace(args.workspace)
    jobs.sync_runs(ws)
    rep = report(ws, args.dataset, args.split, args.decoding)
    _emit(args, rep, format_report(rep))
    return 0


def cmd_judge(args) -> int:
    from core.judges.base import JudgeConfig
    from core.steps.judge import judge_summary, start_judging

    ws = open_workspace(args.workspace)
    cfg = config_from_args(JudgeConfig, args)  # the rubric is no flag of its own: --rubric names a JSON file
    if args.rubric:
        try:
            cfg.rubric = json.loads(Path(args.rubric).read_text())
        except (OSError, ValueError) as e:
            raise WorkspaceError(f"cannot read the rubric {args.rubric}: {e}") from None
    run_id = start_judging(ws, args.run, cfg)
    _follow(ws, run_id, args.json)
    s = judge_summary(ws, run_id)
    return _job_result(
        args, ws, run_id, s,
        f"Run {run_id}: {s['judged']} candidates judged, {s['errors']} judge errors, mean overall {s['mean_overall']}.",
    )


def cmd_pairs(args) -> int:
    from core.policy.mining import PairPolicy
    from core.steps.pairs import mine_run
    from core.store.runs import judge_runs_of, run_kind

    ws = open_workspace(args.workspace)
    kind = run_kind(ws, args.run)
    if kind is None:
        raise WorkspaceError(f"no run {args.run!r} in this workspace")
    judge_run = args.run if kind == "judge" else next(iter(judge_runs_of(ws, args.run)), None)
    if judge_run is None:
        raise WorkspaceError(f"run {args.run!r} has not been judged: run `loopbreak judge --run {args.run}` first")
    policy = config_from_args(PairPolicy, args)
    s = mine_run(ws, judge_run, policy, write=not args.dry_run)
    reasons = "; ".join(f"{k}: {v}" for k, v in s["no_pair"].items()) or "none"
    _emit(args, s, f"{s['pairs']} pairs from {s['items_with_pairs']} of {s['items']} items ({s['rejected_degenerate']} with a "
                   f"degenerate rejected), {s['new']} new. Items without a pair — {reasons}.")
    return 0


def cmd_review(args) -> int:
    """Bulk decisions (audited like single ones), or the run's progress and agreement."""
    from core.review.agreement import agreement, bulk, progress
    from core.review.queue import QueueFilter

    from core.store.runs import pairs_run

    ws = open_workspace(args.workspace, create=False)
    args.run = pairs_run(ws, args.run)
    flt = QueueFilter.parse(args.filter or [], run=args.run)
    if args.approve_all or args.reject_all:
        if not args.reviewer:
            raise WorkspaceError("--reviewer NAME is required for a bulk decision")
        s = bulk(ws, flt, "approve" if args.approve_all else "reject", args.reviewer)
        s["progress"] = progress(ws, args.run)
        _emit(args, s, f"{'Approved' if args.approve_all else 'Rejected'} {s['decided']} of {s['matched']} matching pending pairs as {args.reviewer}"
                       f" ({len(s['conflicts'])} changed meanwhile and were left).")
        return 0
    p, a = progress(ws, args.run), agreement(ws, args.run)
    rate = "–" if a["override_rate"] is None else f"{a['override_rate']:.0%}"
    _emit(args, {"progress": p, "agreement": a},
          f"{p['done']} of {p['total']} pairs decided ({p['approved']} approved, {p['rejected']} rejected), {p['left']} left; "
          f"humans overrode the judge on {rate} of decided pairs.")
    return 0


def cmd_export(args) -> int:
    from core.steps.export import ExportConfig, export_pairs

    ws = open_workspace(args.workspace, create=False)
    s = export_pairs(ws, args.out, config_from_args(ExportConfig, args))
    _emit(args, s, f"Exported {s['pairs']} approved pairs ({s['rejected_cut_at_limit']} rejected cut at the length limit) "
                   f"as {s['format']} to {s['out']}" + (f", pushed to {s['pushed_to']}" if s["pushed_to"] else "") + ".")
    return 0


def cmd_resume(args) -> int:
    from core import jobs
    from core.steps.sample import run_summary

    ws = open_workspace(args.workspace)
    jobs.launch(ws, args.run)
    _follow(ws, args.run, args.json)
    s = run_summary(ws, args.run)
    return _job_result(args, ws, args.run, s, f"Run {args.run} resumed and finished: {s['candidates']} candidates.")


def cmd_cancel(args) -> int:
    """Needs no database: the job's folder holds its pid, so this works while the app runs."""
    from core import jobs
    from core.store import Workspace, resolve_workspace

    ok = jobs.cancel(Workspace(resolve_workspace(args.workspace)), args.run)
    _emit(args, {"run_id": args.run, "cancelled": ok}, f"Sent SIGTERM to run {args.run}." if ok else f"Run {args.run} is not running.")
    return 0 if ok else 1


def cmd_train(args) -> int:
    """Train DPO or SFT as a background job, follow it, and register the model it saves."""
    from core.steps.train import DPORunConfig, SFTRunConfig
    from core.steps.train_job import TrainJobConfig, finish_training, start_training, training_summary

    ws = open_workspace(args.workspace, create=False)
    params = args_values(DPORunConfig if args.method == "dpo" else SFTRunConfig, args)  # only the flags given
    cfg = config_from_args(TrainJobConfig, args, method=args.method, params=params)
    run_id = start_training(ws, cfg, launch=not args.prepare_only)
    if args.prepare_only:
        job_dir = ws.jobs_dir / run_id
        _emit(args, {"run_id": run_id, "status": "queued", "job_dir": str(job_dir)},
              f"Prepared {run_id}. Run it, e.g. on N GPUs (or N CPU processes):\n  torchrun --standalone --nproc_per_node N -m core job run {job_dir}\n"
              f"  accelerate launch --num_processes N -m core job run {job_dir}   (GPUs)\n"
              "The app (or `loopbreak status`) registers the model once it is done.")
        return 0
    _follow(ws, run_id, args.json)
    finish_training(ws, run_id)
    s = training_summary(ws, run_id)
    m = s["model"] or {}
    for w in s["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return _job_result(
        args, ws, run_id, s,
        f"Run {run_id}: {s['result'].get('global_step', 0)} steps, final loss {s['result'].get('train_loss')}; "
        f"registered {m.get('name')} ({m.get('family') or '?'} · {m.get('stage')}) at {m.get('path')}.",
    )


def cmd_job_run(args) -> int:
    """The worker's entry point; also runs a spec headless on any machine or scheduler."""
    from core.jobs.worker import run_job

    from core.jobs.worker import parse_shard

    status = run_job(args.job_dir, parse_shard(args.shard))
    _emit(args, {"job_dir": args.job_dir, "status": status}, f"job {status}")
    return 0 if status == "done" else 1


def cmd_serve(args) -> int:
    from core.serve import CompletionsServer

    server = CompletionsServer(args.model, args.host, args.port, args.name)
    kind = "a vision model: send pages to /v1/chat/completions" if server.sampler.vision else "/v1/completions and /v1/chat/completions"
    print(f"Serving {args.model} on http://{args.host}:{server.server_port}/v1 ({kind}; Ctrl-C stops)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _subcommands(p: argparse.ArgumentParser, dest: str, metavar: str, required: bool = True):
    """A subcommand table whose parsers all get `--json` (and `--workspace`) and show BoolFlags well."""
    sub = p.add_subparsers(dest=dest, required=required, metavar=metavar)

    def command(name: str, func, help: str, workspace: bool = True, description: str | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)
        if func is not None:
            sp.set_defaults(func=func)
            if workspace:
                sp.add_argument("--workspace", "-w", help="workspace folder (default: $LOOPBREAK_WORKSPACE or ./workspace)")
            sp.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
        return sp

    return command


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags come from its config dataclass through `core.config.add_flags`; what
    is hand-written here is what no config holds (the run to work on, output paths, modes)."""
    from core.demo.models import DemoBuildConfig
    from core.judges import JUDGES
    from core.policy.detect import DetectConfig
    from core.judges.base import JudgeConfig
    from core.policy.mining import PairPolicy
    from core.samplers import BACKENDS
    from core.steps.evaluate import EvalConfig
    from core.steps.export import FORMATS as EXPORT_FORMATS
    from core.steps.export import ExportConfig
    from core.steps.importer import FORMATS as IMPORT_FORMATS
    from core.steps.importer import ImportFields
    from core.steps.sample import SampleConfig
    from core.steps.train import DPORunConfig, SFTRunConfig
    from core.steps.train_job import SFT_SOURCES, TrainJobConfig

    p = argparse.ArgumentParser(prog="loopbreak", description="Turn a model's own repetition loops into DPO training signal.",
                                formatter_class=HelpFormatter)
    command = _subcommands(p, "command", "COMMAND")
    # the short options and renamed flags users have; the rest are --field-name
    model_dataset = {"model": ["--model", "-m"], "models": ["--model", "-m"], "dataset": ["--dataset", "-d"]}
    required = {"required": True}

    command("status", cmd_status, "show the workspace's counts for each stage of the flow")

    sp = command("import", cmd_import, "import documents (JSONL, JSON, CSV, Parquet, or a `datasets` folder) as items")
    sp.add_argument("file", help="the file or `datasets` folder to import")
    sp.add_argument("--dataset", "-d", required=True, help="dataset name the items go into")
    sp.add_argument("--split", help="split for every row (default: the file's split column, else 'train')")
    sp.add_argument("--format", choices=IMPORT_FORMATS, help="override the file type guessed from the name")
    add_flags(sp, ImportFields, flags={f.name: [f"--{f.name}-field"] for f in dataclasses.fields(ImportFields)},
              dest_prefix="field_")  # text ↔ --text-field: --split is the split itself

    sp = command("model", None, "register your own models (a local folder or a hub id) by family and stage")
    model_command = _subcommands(sp, "model_command", "add|list")
    mp = model_command("add", cmd_model_add, "register a model")
    mp.add_argument("name", help="a short name, e.g. qwen2.5-vl-3b-sft")
    mp.add_argument("--path", required=True, help="local model folder or hub id")
    mp.add_argument("--family", help="model family, e.g. qwen2.5-vl-3b")
    mp.add_argument("--stage", help="training stage: vanilla, sft or dpo (dpo2, dpo3… for later rounds)")
    mp.add_argument("--parent", help="the registered model it was trained from")
    model_command("list", cmd_model_list, "list registered models")

    sp = command("demo", cmd_demo, "create (or refresh) a workspace with the demo dataset and the demo models")
    sp.add_argument("--seed", type=int, default=0, help="seed of the document generator (default 0)")
    sp.add_argument("--n-train", type=int, default=600, help="train documents (default 600)")
    sp.add_argument("--n-validation", type=int, default=100, help="validation documents (default 100)")
    sp.add_argument("--n-test", type=int, default=300, help="test documents (default 300)")
    sp.add_argument("--noise", type=float, default=0.3, help="OCR noise level of the inputs, 0..1 (default 0.3)")
    sp.add_argument("--images", action=BoolFlag, default=True, help="render each document as its page image (PNG), which the demo VLM reads (default on; --no-images for text only)")
    sp.add_argument("--no-models", action="store_true", help="import the documents only; do not build or register models")
    sp.add_argument("--models-dir", help="where the demo models are (built there if missing)")
    demo_command = _subcommands(sp, "demo_command", "build|measure", required=False)
    bp = demo_command(
        "build", cmd_demo_build, "build the demo model families (vanilla and SFT) on CPU", workspace=False)
    bp.add_argument("--families", help="comma-separated families to build (default: all)")
    bp.add_argument("--out", help="output folder for the models")
    # families: the comma-separated --families above; sft_steps and spec_overrides (dicts per family) have no flag
    add_flags(bp, DemoBuildConfig, skip=("families", "sft_steps", "spec_overrides"))
    mp = demo_command(
        "measure", cmd_demo_measure, "measure the demo SFT models again on validation, through the product's sampler", workspace=False)
    mp.add_argument("--families", help="comma-separated families to measure (default: all)")
    mp.add_argument("--out", help="the models' folder (default: the shipped data/models)")

    sp = command("sample", cmd_sample, "sample N candidates per item from a model, as a background job")
    add_flags(sp, SampleConfig, flags={**model_dataset, "timeout_s": ["--timeout", "--timeout-s"]},
              choices={"backend": BACKENDS, "chat_template": ("auto", "on", "off")},
              extra={"model": required, "dataset": required})
    sp.add_argument("--prepare-only", action=BoolFlag, default=False,
                    help="write the job folder and stop: run it as K workers, `loopbreak job run DIR --shard k/K`")

    text = "evaluate models on held-out items (degeneration rate with a 95% interval, quality), as background jobs"
    sp = command("eval", cmd_eval, text.replace("%", "%%"), description=text)
    add_flags(sp, EvalConfig, flags=model_dataset, choices={"backend": BACKENDS},
              extra={"models": {"required": True, "metavar": "MODEL", "help": "model to evaluate (repeat for several)"},
                     "dataset": required})
    sp.add_argument("--prepare-only", action=BoolFlag, default=False,
                    help="write the job folders and stop: run each as K workers, `loopbreak job run DIR --shard k/K`")

    sp = command("report", cmd_report, "print the per-family table: degeneration by stage with intervals, quality, DPO's reduction")
    sp.add_argument("--dataset", "-d", help="only this dataset's evaluations")
    sp.add_argument("--split", help="only this split's evaluations")
    sp.add_argument("--decoding", choices=["greedy", "sampled"], default="greedy", help="which decoding's rates (default greedy)")

    sp = command("judge", cmd_judge, "score a sampling run's candidates with a judge, as a background job")
    sp.add_argument("--run", required=True, help="the sampling run to judge")
    sp.add_argument("--rubric", metavar="FILE",
                    help="JSON file: a list of {name, description, weight} (default: the built-in rubric)")
    add_flags(sp, JudgeConfig, choices={"judge": JUDGES, "backend": BACKENDS}, skip=("rubric",))  # rubric: read from --rubric

    sp = command("pairs", cmd_pairs, "mine chosen/rejected pairs from a judged run (stored as pending)")
    sp.add_argument("--run", required=True, help="a judging run, or a sampling run (its latest judging run is used)")
    sp.add_argument("--dry-run", action=BoolFlag, default=False, help="only count what would be mined")
    add_flags(sp, PairPolicy)

    sp = command("review", cmd_review, "review pairs headless: bulk-approve/reject a filtered queue, or show progress and agreement")
    sp.add_argument("--run", help="sampling run whose pairs are reviewed, or the judging run that scored it (default: all runs)")
    sp.add_argument("--approve-all", action="store_true", help="approve every pending pair matching the filter")
    sp.add_argument("--reject-all", action="store_true", help="reject every pending pair matching the filter")
    sp.add_argument("--filter", action="append", metavar="KEY=VALUE",
                    help="queue filter, repeatable: degenerate_only=true, close_calls=true, max_margin=0.1, overridden=true, "
                         "reviewer=NAME, family=F, stage=S")
    sp.add_argument("--reviewer", help="your name, recorded with every decision")

    sp = command("export", cmd_export, "export approved pairs for training (TRL preference format, JSONL, Parquet, datasets folder)")
    sp.add_argument("--out", required=True, help="output file (trl, jsonl, parquet) or folder (hf)")
    add_flags(sp, ExportConfig, flags={"hub_repo": ["--push-to-hub"]}, extra={"hub_repo": {"metavar": "REPO"}},
              choices={"format": EXPORT_FORMATS, "style": ("standard", "conversational")})

    sp = command("train", None, "train a DPO or SFT stage on approved pairs (or references) as a background job; "
                 "registers the new model")
    train_command = _subcommands(sp, "method", "dpo|sft")
    for method, run_cls, text in (("dpo", DPORunConfig, "DPO on approved pairs (a run or an export)"),
                                  ("sft", SFTRunConfig, "SFT on the pairs' chosen texts or a dataset's references")):
        tp = train_command(method, cmd_train, text)
        # method: the subcommand; params: the run config's flags below
        add_flags(tp, TrainJobConfig, skip=("method", "params"), flags={"sft_source": ["--source"]},
                  choices={"sft_source": SFT_SOURCES}, extra={"base": required})
        tp.add_argument("--prepare-only", action=BoolFlag, default=False,
                        help="write the job folder and stop: run it yourself, "
                             "e.g. `torchrun --nproc_per_node N -m core job run DIR`")
        # sparse: only the flags given go into the job's params (its spec stays what the user asked)
        add_flags(tp, run_cls, dest_prefix="p_", sparse=True,
                  aliases={"num_train_epochs": ["--epochs"], "per_device_train_batch_size": ["--batch-size"],
                           "learning_rate": ["--lr"]})

    command("resume", cmd_resume, "resume a run that was cancelled or died, without redoing finished items").add_argument(
        "run", help="run id")
    command("cancel", cmd_cancel, "cancel a running job (SIGTERM to its process group)").add_argument("run", help="run id")
    sp = command("job", None, "run a job spec folder in this process (what background workers do)")
    jp = _subcommands(sp, "job_command", "run")("run", cmd_job_run, "run the job in DIR (its spec.json) here, headless",
                                                 workspace=False)
    jp.add_argument("job_dir", help="the job's folder")
    jp.add_argument("--shard", metavar="k/K", help="be worker k of K (0-based) on a sampling or evaluation job: every "
                    "K-th shard of items from the k-th; run all K, anywhere that sees the folder")

    sp = command("serve", cmd_serve, "serve a local model as an OpenAI-compatible /v1/completions endpoint", workspace=False)
    sp.add_argument("--model", "-m", required=True, help="local model folder")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sp.add_argument("--name", help="model name reported to clients (default: the path)")

    sp = command("detect", cmd_detect, "detect repetition loops in JSONL lines {id?, text, finish_reason?}", workspace=False)
    sp.add_argument("file", nargs="?", default="-", help="JSONL file, or - for stdin")
    sp.add_argument("--workers", type=int, default=0, metavar="N",
                    help="processes analyzing batches of about 1 MB, output in input order (default 0: one per core)")
    add_flags(sp, DetectConfig, skip=("tail_window",))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except WorkspaceError as e:
        print(f"error: {e}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e)}, ensure_ascii=False))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
