"""`loopbreak` (also `python -m core`): the same steps as the app, headless.

Every command accepts `--json` and then prints a machine-readable summary as its LAST line of
stdout; progress bars go to stderr. A problem the user can act on (a malformed file, a locked
workspace) is printed as one clear line, exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.store import WorkspaceError, counts, open_workspace


def _emit(args, summary: dict, human: str) -> None:
    """Print the human line, or with --json the summary as the last line of stdout."""
    if getattr(args, "json", False):
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        print(human)


def cmd_status(args) -> int:
    ws = open_workspace(args.workspace)
    c = counts(ws.cursor())
    lines = [f"workspace {ws.root}"] + [f"  {k:<18} {v}" for k, v in c.items()]
    _emit(args, {"workspace": str(ws.root), **c}, "\n".join(lines))
    return 0


def cmd_import(args) -> int:
    from core.importer import ImportFields, import_file

    fields = ImportFields(
        text=args.text_field, reference=args.reference_field, id=args.id_field, image=args.image_field
    )
    ws = open_workspace(args.workspace)
    result = import_file(ws, args.file, args.dataset, split=args.split, fields=fields, fmt=args.format)
    splits = ", ".join(f"{k}: {v}" for k, v in sorted(result.splits.items()))
    _emit(
        args, result.to_dict(),
        f"Imported {result.new} new items into {result.dataset!r} ({result.unchanged} unchanged; {splits}).",
    )
    return 0


def cmd_demo(args) -> int:
    from tqdm import tqdm

    from core.demo_docs import build_demo_records
    from core.importer import ImportFields, import_records, validate

    ws = open_workspace(args.workspace)
    with tqdm(total=1, desc="demo documents", file=sys.stderr, disable=args.json) as bar:
        records = build_demo_records(
            seed=args.seed, n_train=args.n_train, n_validation=args.n_validation, n_test=args.n_test,
            noise=args.noise, images_dir=(ws.images_dir / "demo") if args.images else None,
        )
        bar.update()
    items = validate(((i, r) for i, r in enumerate(records, 1)), Path("<demo>"), ImportFields(), None)
    result = import_records(ws, items, "demo", source=f"demo seed={args.seed} noise={args.noise}")
    models: list[str] = []
    if not args.no_models:
        from core.demo_models import register_demo_models

        models = register_demo_models(ws, Path(args.models_dir) if args.models_dir else None)
    summary = {"workspace": str(ws.root), "dataset": "demo", **result.to_dict(), "models": models}
    _emit(
        args, summary,
        f"Demo workspace ready at {ws.root}: {result.rows} documents ({result.new} new), {len(models)} models registered.",
    )
    return 0


def cmd_demo_build(args) -> int:
    raise WorkspaceError("`loopbreak demo build` is not available yet.")


def cmd_detect(args) -> int:
    raise WorkspaceError("`loopbreak detect` is not available yet.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loopbreak",
        description="Turn a model's own repetition loops into DPO training signal.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str, workspace: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        if workspace:
            sp.add_argument("--workspace", "-w", help="workspace folder (default: $LOOPBREAK_WORKSPACE or ./workspace)")
        sp.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
        return sp

    command("status", cmd_status, "show the workspace's counts for each stage of the flow")

    sp = command("import", cmd_import, "import documents (JSONL, JSON, CSV, Parquet, or a `datasets` folder) as items")
    sp.add_argument("file", help="the file or `datasets` folder to import")
    sp.add_argument("--dataset", "-d", required=True, help="dataset name the items go into")
    sp.add_argument("--split", help="split for every row (default: the file's split column, else 'train')")
    sp.add_argument("--format", choices=["jsonl", "json", "csv", "parquet", "hf"], help="override the file type guessed from the name")
    sp.add_argument("--text-field", default="text", help="column holding the document text (default: text)")
    sp.add_argument("--reference-field", default="reference", help="column holding the reference (default: reference)")
    sp.add_argument("--id-field", default="id", help="column holding the item id (default: id; hashes of the text when absent)")
    sp.add_argument("--image-field", default="image", help="column holding an image path or bytes (default: image)")

    sp = command("demo", cmd_demo, "create (or refresh) a workspace with the demo dataset and the demo models")
    sp.add_argument("--seed", type=int, default=0, help="seed of the document generator")
    sp.add_argument("--n-train", type=int, default=600, help="train documents")
    sp.add_argument("--n-validation", type=int, default=100, help="validation documents")
    sp.add_argument("--n-test", type=int, default=300, help="test documents")
    sp.add_argument("--noise", type=float, default=0.3, help="OCR noise level of the inputs, 0..1")
    sp.add_argument("--images", action="store_true", help="also render each document as a PNG")
    sp.add_argument("--no-models", action="store_true", help="import the documents only; do not build or register models")
    sp.add_argument("--models-dir", help="where the demo models are (built there if missing)")
    demo_sub = sp.add_subparsers(dest="demo_command", metavar="build")
    bp = demo_sub.add_parser("build", help="build the demo model families (vanilla and SFT) on CPU")
    bp.set_defaults(func=cmd_demo_build)
    bp.add_argument("--families", help="comma-separated families to build (default: all)")
    bp.add_argument("--out", help="output folder for the models")
    bp.add_argument("--seed", type=int, default=0, help="seed of the whole build")
    bp.add_argument("--json", action="store_true", help="print a JSON summary as the last line")

    sp = command("detect", cmd_detect, "detect repetition loops in JSONL lines {id?, text, finish_reason?}", workspace=False)
    sp.add_argument("file", nargs="?", default="-", help="JSONL file, or - for stdin")
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
