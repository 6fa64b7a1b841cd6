"""The CLI's flags come from the config dataclasses (core.config.add_flags): every option a user
had keeps its name and default (tests/data/cli_options.json, a snapshot of the hand-written
parser), every config field has a flag, and parsed argv builds the configs back."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from core.cli import build_parser
from core.config import args_values, config_from_args, field_types
from core.demo.models import DemoBuildConfig
from core.judges.base import JudgeConfig
from core.policy.mining import PairPolicy
from core.samplers.base import DecodingConfig
from core.steps.evaluate import EvalConfig
from core.steps.export import ExportConfig
from core.steps.importer import ImportFields
from core.steps.sample import SampleConfig
from core.steps.train import DPORunConfig, SFTRunConfig
from core.steps.train_job import TrainJobConfig

SNAPSHOT = Path(__file__).parent / "data" / "cli_options.json"


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, list[argparse.Action]]:
    """Command path ("train dpo") -> its option actions, as the snapshot was made: `_actions`,
    recursing into the subcommands, without the help actions and positionals."""
    out: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(walk(sub, path + (name,)))
        elif isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        else:
            out.setdefault(" ".join(path), []).append(action)
    return out


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.fixture(scope="module")
def commands(parser):
    return walk(parser)


def parse(parser, argv: list[str]) -> argparse.Namespace:
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the snapshot


def test_every_snapshot_option_keeps_its_names_and_default(commands):
    snapshot = json.loads(SNAPSHOT.read_text())
    assert len(snapshot) > 150
    missing, changed = [], []
    for entry in snapshot:
        actions = commands.get(entry["command"], [])
        match = [a for a in actions if set(entry["flags"]) <= set(a.option_strings)]
        if not match:
            missing.append(f"{entry['command']} {'/'.join(entry['flags'])}")
        elif match[0].default != entry["default"]:
            changed.append(f"{entry['command']} {'/'.join(entry['flags'])}: {entry['default']!r} -> {match[0].default!r}")
    assert not missing, f"options gone: {missing}"
    assert not changed, f"defaults changed: {changed}"


def test_every_command_keeps_json_and_workspace(commands):
    no_workspace = {"demo build", "demo measure", "job run", "serve", "detect"}  # as in the snapshot (measure: new, on a models folder)
    for cmd, actions in commands.items():
        strings = {s for a in actions for s in a.option_strings}
        assert "--json" in strings, cmd
        if cmd not in no_workspace:
            assert {"--workspace", "-w"} <= strings, cmd


# ---------------------------------------------------------------- every field has a flag

REQUIRED = {  # the least argv each command parses with
    "import": ["data.jsonl", "-d", "ds"],
    "sample": ["-m", "x", "-d", "y"],
    "eval": ["-m", "x", "-d", "y"],
    "judge": ["--run", "r"],
    "pairs": ["--run", "r"],
    "export": ["--out", "o.jsonl"],
    "demo build": [],
    "train dpo": ["--base", "b"],
    "train sft": ["--base", "b"],
}
CONFIGS = {  # command -> its config dataclasses; `params` holds the run config's fields
    "import": [ImportFields],
    "sample": [SampleConfig],
    "eval": [EvalConfig],
    "judge": [JudgeConfig],
    "pairs": [PairPolicy],
    "export": [ExportConfig],
    "demo build": [DemoBuildConfig],
    "train dpo": [TrainJobConfig, DPORunConfig],
    "train sft": [TrainJobConfig, SFTRunConfig],
}
RENAMED = {  # (command, field) -> its flag, where it is not --field-name
    **{("import", f): f"--{f}-field" for f in ("text", "reference", "id", "image", "split")},
    ("sample", "timeout_s"): "--timeout-s",
    ("eval", "models"): "--model",
    ("export", "hub_repo"): "--push-to-hub",
    ("train dpo", "sft_source"): "--source",
    ("train sft", "sft_source"): "--source",
}
NO_FLAG = {  # fields that are no flag of their own, and why
    ("judge", "rubric"): "a list of criteria: --rubric FILE reads it from JSON",
    ("demo build", "families"): "--families takes them comma-separated",
    ("demo build", "sft_steps"): "a dict of steps per family",
    ("demo build", "spec_overrides"): "a dict per family (tests)",
    ("train dpo", "method"): "the subcommand",
    ("train sft", "method"): "the subcommand",
    ("train dpo", "params"): "the DPORunConfig flags",
    ("train sft", "params"): "the SFTRunConfig flags",
}

HELP_GIVEN = {("eval", "models"): "model to evaluate (repeat for several)"}  # the flag's own help


def leaf_fields(cls) -> list[tuple[type, dataclasses.Field]]:
    """(owning class, field), nested configs' fields in place of the nested field."""
    out = []
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(types[f.name]):
            out += leaf_fields(types[f.name])
        else:
            out.append((cls, f))
    return out


def flag_cases():
    for cmd, classes in CONFIGS.items():
        for cls in classes:
            for owner, f in leaf_fields(cls):
                if (cmd, f.name) not in NO_FLAG:
                    yield pytest.param(cmd, cls, owner, f, id=f"{cmd}:{f.name}")


def a_new_value(action: argparse.Action, f: dataclasses.Field, owner) -> tuple[list[str], object]:
    """Argv words that set the field to something other than its default, and that value."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    annotation = str(field_types(owner)[f.name])
    if action.choices:
        value = next(c for c in action.choices if c != default)
        return [str(value)], value
    if "bool" in annotation:
        return ["false" if default else "true"], not default
    if annotation.startswith("list"):
        return ["zz"], "zz"
    if "int" in annotation:
        return [str((default or 0) + 3)], (default or 0) + 3
    if "float" in annotation:
        return [str((default or 0) + 0.25)], (default or 0) + 0.25
    return ["zz"], "zz"


@pytest.mark.parametrize("cmd,cls,owner,f", list(flag_cases()))
def test_every_config_field_has_a_flag_that_sets_it(parser, commands, cmd, cls, owner, f):
    flag = RENAMED.get((cmd, f.name), f"--{f.name.replace('_', '-')}")
    action = next((a for a in commands[cmd] if flag in a.option_strings), None)
    assert action is not None, f"{cmd} has no {flag} for {cls.__name__}.{f.name}"
    if (cmd, f.name) not in HELP_GIVEN:
        assert f.metadata["help"].replace("%", "%%") in action.help  # the field's own help, then its default
    words, value = a_new_value(action, f, owner)
    base = parse(parser, cmd.split() + REQUIRED[cmd])
    args = parse(parser, cmd.split() + REQUIRED[cmd] + [flag] + words)
    if cls in (DPORunConfig, SFTRunConfig):  # sparse: only what was given goes into the job's params
        assert args_values(cls, base) == {}
        assert args_values(cls, args) == {f.name: value}
        return
    got = config_from_args(cls, args)
    if owner is not cls:
        got = next(getattr(got, n.name) for n in dataclasses.fields(cls) if isinstance(getattr(got, n.name), owner))
    expected = value
    if str(field_types(owner)[f.name]).startswith("list"):  # repeatable: appended to the required ones
        expected = getattr(config_from_args(cls, base), f.name) + [value]
    assert getattr(got, f.name) == expected


def test_the_fields_named_in_the_issue_have_flags(commands):
    sample = {s for a in commands["sample"] for s in a.option_strings}
    assert {"--instruction", "--chat-template", "--api-key-env", "--retries", "--timeout", "--timeout-s"} <= sample
    judge = {s for a in commands["judge"] for s in a.option_strings}
    assert {"--rubric", "--max-candidate-chars", "--max-new-tokens", "--retries", "--batch-size"} <= judge
    pairs = {s for a in commands["pairs"] for s in a.option_strings}
    assert {"--degenerate-only", "--chosen-must-finish", "--no-chosen-must-finish"} <= pairs


def test_choices_come_from_the_backend_judge_and_format_tables(commands):
    from core.judges import JUDGES
    from core.samplers import SAMPLERS
    from core.steps import export, importer

    def choices(cmd, flag):
        return next(a.choices for a in commands[cmd] if flag in a.option_strings)

    for cmd in ("sample", "eval", "judge"):
        assert choices(cmd, "--backend") == list(SAMPLERS)
    assert choices("judge", "--judge") == list(JUDGES)
    assert choices("export", "--format") == list(export.FORMATS)
    assert list(choices("import", "--format")) == list(importer.FORMATS)


# ---------------------------------------------------------------- argv -> configs


def test_sample_argv_builds_the_sample_config(parser):
    args = parse(parser, ["sample", "-m", "x", "-d", "y", "--n", "2", "--no-with-greedy", "--instruction", "Leia.",
                          "--timeout", "30", "--backend", "openai", "--top-k", "5", "--early-stop", "--split", "test"])
    cfg = config_from_args(SampleConfig, args)
    assert cfg == SampleConfig(model="x", dataset="y", split="test", backend="openai", instruction="Leia.", timeout_s=30.0,
                               decoding=DecodingConfig(n=2, top_k=5, with_greedy=False, early_stop=True))
    assert config_from_args(SampleConfig, parse(parser, ["sample", "-m", "x", "-d", "y"])) == SampleConfig(model="x", dataset="y")
    assert config_from_args(SampleConfig, parse(parser, ["sample", "-m", "x", "-d", "y", "--timeout-s", "7"])).timeout_s == 7.0


def test_other_commands_build_their_configs(parser):
    ev = config_from_args(EvalConfig, parse(parser, ["eval", "-m", "a", "--model", "b", "-d", "demo", "--no-greedy",
                                                     "--n-sampled", "3", "--max-new-tokens", "64"]))
    assert ev == EvalConfig(models=["a", "b"], dataset="demo", greedy=False, n_sampled=3, max_new_tokens=64)
    assert config_from_args(EvalConfig, parse(parser, ["eval", "-m", "a", "-d", "demo", "--split", "none"])).split is None
    judge = config_from_args(JudgeConfig, parse(parser, ["judge", "--run", "r", "--judge", "llm", "--retries", "2"]))
    assert judge == JudgeConfig(judge="llm", retries=2)
    pol = config_from_args(PairPolicy, parse(parser, ["pairs", "--run", "r", "--reference-as-chosen", "--min-margin", "0.2",
                                                      "--no-chosen-must-finish"]))
    assert pol == PairPolicy(reference_as_chosen=True, min_margin=0.2, chosen_must_finish=False)
    exp = config_from_args(ExportConfig, parse(parser, ["export", "--out", "o", "--format", "hf", "--push-to-hub", "me/pairs",
                                                        "--overwrite", "--run", "s1"]))
    assert exp == ExportConfig(format="hf", hub_repo="me/pairs", overwrite=True, run="s1")
    imp = parse(parser, ["import", "f.csv", "-d", "ds", "--split", "train", "--text-field", "body", "--id-field", "key"])
    assert config_from_args(ImportFields, imp) == ImportFields(text="body", id="key") and imp.split == "train"
    demo = parse(parser, ["demo", "build", "--families", "gpt2", "--seed", "3", "--vanilla-steps", "5"])
    built = config_from_args(DemoBuildConfig, demo, families=["gpt2"])
    assert built == DemoBuildConfig(seed=3, families=["gpt2"], vanilla_steps=5)


def test_train_argv_builds_the_job_config_with_only_the_params_given(parser):
    args = parse(parser, ["train", "dpo", "--base", "tiny", "--pairs", "rs", "--lr", "1e-3", "--epochs", "3", "--batch-size", "2",
                          "--merge-lora", "false", "--use-lora", "true", "--loss", "rpo"])
    params = args_values(DPORunConfig, args)
    assert params == {"learning_rate": 1e-3, "num_train_epochs": 3.0, "per_device_train_batch_size": 2, "merge_lora": False,
                      "use_lora": True, "loss": "rpo"}
    cfg = config_from_args(TrainJobConfig, args, method=args.method, params=params)
    assert cfg == TrainJobConfig(method="dpo", base="tiny", pairs="rs", params=params)
    sft = parse(parser, ["train", "sft", "--base", "tiny", "--source", "references", "--dataset", "demo", "--packing"])
    assert config_from_args(TrainJobConfig, sft, method="sft", params={}).sft_source == "references"
    assert args_values(SFTRunConfig, sft) == {"packing": True}
    assert not parse(parser, ["train", "sft", "--base", "b"]).prepare_only
    assert parse(parser, ["train", "sft", "--base", "b", "--prepare-only"]).prepare_only is True


# ---------------------------------------------------------------- the boolean convention


@pytest.mark.parametrize("argv,dest,value", [
    (["sample", "-m", "x", "-d", "y", "--with-greedy"], "with_greedy", True),
    (["sample", "-m", "x", "-d", "y", "--no-with-greedy"], "with_greedy", False),
    (["sample", "-m", "x", "-d", "y", "--with-greedy", "off"], "with_greedy", False),
    (["sample", "-m", "x", "-d", "y", "--early-stop"], "early_stop", True),
    (["sample", "-m", "x", "-d", "y", "--early-stop", "yes"], "early_stop", True),
    (["pairs", "--run", "r", "--reference-as-chosen"], "reference_as_chosen", True),
    (["pairs", "--run", "r", "--dry-run"], "dry_run", True),
    (["pairs", "--run", "r", "--dry-run", "false"], "dry_run", False),
    (["export", "--out", "o", "--overwrite"], "overwrite", True),
    (["export", "--overwrite", "--out", "o"], "overwrite", True),
    (["train", "dpo", "--base", "b", "--use-lora", "true"], "p_use_lora", True),
    (["train", "dpo", "--base", "b", "--use-lora", "false"], "p_use_lora", False),
    (["train", "dpo", "--base", "b", "--use-lora"], "p_use_lora", True),
    (["train", "dpo", "--base", "b", "--merge-lora", "false"], "p_merge_lora", False),
    (["train", "dpo", "--base", "b", "--no-merge-lora"], "p_merge_lora", False),
    (["train", "dpo", "--base", "b", "--bf16", "none"], "p_bf16", None),
    (["train", "dpo", "--base", "b", "--bf16", "1"], "p_bf16", True),
    (["train", "dpo", "--base", "b"], "p_bf16", None),
])
def test_boolean_flags_take_the_old_forms_and_values(parser, argv, dest, value):
    assert getattr(parse(parser, argv), dest) is value


@pytest.mark.parametrize("argv", [
    ["train", "dpo", "--base", "b", "--merge-lora", "maybe"],
    ["sample", "-m", "x", "-d", "y", "--no-with-greedy", "true"],
    ["sample", "-m", "x", "-d", "y", "--with-greedy", "none"],  # not optional: none is no boolean here
    ["sample", "-m", "x", "-d", "y", "--n", "two"],
    ["sample", "-m", "x", "-d", "y", "--backend", "nope"],
    ["sample", "-d", "y"],  # --model is required
    ["eval", "-d", "y"],
    ["train", "dpo"],
])
def test_bad_values_are_usage_errors(parser, argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(parser, argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_every_help_renders_with_the_defaults(parser):
    def parsers(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from parsers(sub)

    for p in parsers(parser):
        p.format_help()  # a stray % in a field's help would raise here
    sample = parser._subparsers._group_actions[0].choices["sample"].format_help()
    assert "--n INT" in sample and "(default 4)" in sample and "--with-greedy [BOOL], --no-with-greedy" in sample
