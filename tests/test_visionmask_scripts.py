"""The VisionMask shell recipes: the shipped-model script and the reference sweep collect the same
states and train the same way (scripts/visionmask_recipe.sh), checked with a recording stand-in for
the xrlkit entry point."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def recording_bin(tmp_path: Path) -> Path:
    """A folder whose ``xrlkit`` and ``python`` only append their arguments to ``calls.log``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("xrlkit", "python"):
        tool = bin_dir / name
        tool.write_text(f'#!/usr/bin/env bash\ncat > /dev/null\n{{ printf "{name} "; printf "%q " "$@"; echo; }} >> "{tmp_path}/calls.log"\n')
        tool.chmod(0o755)
    return bin_dir


def _run(script: str, args: list[str], bin_dir: Path) -> list[list[str]]:
    env = {**os.environ, "XRLKIT_BIN": str(bin_dir), "RUN_DIR": str(bin_dir.parent / "runs")}
    subprocess.run(["bash", str(SCRIPTS / script), *args], check=True, env=env, cwd=bin_dir.parent,
                   stdin=subprocess.DEVNULL, timeout=60)
    return [shlex.split(line) for line in (bin_dir.parent / "calls.log").read_text().splitlines()]


def _flags(call: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in zip(call, call[1:]) if flag.startswith("--")}


def test_default_script_and_sweep_share_the_states_and_the_training_recipe(recording_bin):
    shipped_calls = _run("train_default_visionmask.sh", ["Breakout", "15", "4", "32", "int8"], recording_bin)
    (recording_bin.parent / "calls.log").unlink()
    sweep_calls = _run("visionmask_reference_sweep.sh", ["Breakout", "15", "4", "32", "background,blur"], recording_bin)

    collect, train, ship = shipped_calls
    assert collect[:3] == ["xrlkit", "visionmask", "collect"]
    assert _flags(collect) | {"--out": ""} == _flags(sweep_calls[0]) | {"--out": ""}
    assert _flags(collect)["--every"] == "4" and _flags(collect)["--max-episode-steps"] == "1600"
    sweep_trains = [c for c in sweep_calls if c[:3] == ["xrlkit", "visionmask", "train"]]
    assert [_flags(c)["--reference"] for c in sweep_trains] == ["background", "blur"]
    same = {"--data", "--out", "--reference"}
    assert {k: v for k, v in _flags(train).items() if k not in same} == \
        {k: v for k, v in _flags(sweep_trains[0]).items() if k not in same}
    assert _flags(train)["--head-channels"] == "32" and _flags(train)["--reference"] == "background"
    assert ship[1] == "scripts/ship_model.py" and _flags(ship)["--stored-dtype"] == "int8"
    assert _flags(ship)["--command"] == "bash scripts/train_default_visionmask.sh Breakout 15 4 32 int8"
    assert _flags(collect)["--n-states"] == "2000"
    scored = [c for c in sweep_calls if c[:2] == ["xrlkit", "evaluate-explainers"]]
    assert [_flags(c)["--visionmask"].split("/")[-2:] for c in scored[:2]] == \
        [["background", "best.safetensors"], ["blur", "best.safetensors"]]
    assert _flags(scored[2])["--visionmask"] == "shipped"


def test_default_script_collects_the_states_it_is_asked_for_and_names_them_in_its_command(recording_bin):
    collect, _, ship = _run("train_default_visionmask.sh", ["Seaquest", "10", "4", "32", "int8", "10000"], recording_bin)
    assert _flags(collect)["--n-states"] == "10000"
    assert _flags(ship)["--command"] == "bash scripts/train_default_visionmask.sh Seaquest 10 4 32 int8 10000"
