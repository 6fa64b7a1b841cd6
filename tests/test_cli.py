import json
import subprocess
import sys

import pytest

COMMANDS = ("status", "import", "demo", "detect")


@pytest.mark.parametrize("entry", [["loopbreak"], [sys.executable, "-m", "core"]])
def test_help_lists_the_commands(entry):
    if entry == ["loopbreak"]:
        entry = [str(__import__("pathlib").Path(sys.executable).with_name("loopbreak"))]
    out = subprocess.run(entry + ["--help"], capture_output=True, text=True, check=True).stdout
    for cmd in COMMANDS:
        assert cmd in out


def test_demo_then_status(tmp_path):
    ws = tmp_path / "ws"
    demo = subprocess.run(
        [sys.executable, "-m", "core", "demo", "-w", str(ws), "--n-train", "8", "--n-validation", "2",
         "--n-test", "3", "--no-models", "--json"],
        capture_output=True, text=True, check=True,
    )
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 13 and summary["new"] == 13 and summary["splits"] == {"train": 8, "validation": 2, "test": 3}
    again = subprocess.run(
        [sys.executable, "-m", "core", "demo", "-w", str(ws), "--n-train", "8", "--n-validation", "2",
         "--n-test", "3", "--no-models", "--json"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(again.stdout.strip().splitlines()[-1])["unchanged"] == 13
    status = subprocess.run(
        [sys.executable, "-m", "core", "status", "-w", str(ws), "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(status.stdout.strip().splitlines()[-1])["items"] == 13
