"""Every command checks where it writes before any work: an output it cannot write gives a
one-line error naming the output and exit code 2, before any input is even opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xrlkit.cli import main

#: each command with inputs that do not exist: if a command opened them before checking its
#: output, the error would name them instead of the output
COMMANDS = {
    "train": ["train", "--game", "Pong", "--frames", "1000", "--out", "{bad}"],
    "evaluate": ["evaluate", "--agent", "{missing}.zip", "--game", "Pong", "--json", "{bad}/r.json"],
    "evaluate-explainers": ["evaluate-explainers", "--game", "Pong", "--agent", "{missing}.zip", "--out", "{bad}/t.csv"],
    "curves": ["curves", "a={run}", "--out", "{bad}/c.png"],
    "distill": ["distill", "--teacher", "{missing}.zip", "--game", "Pong", "--out", "{bad}"],
    "study": ["study", "--games", "Pong", "--out", "{bad}"],
    "visionmask collect": ["visionmask", "collect", "--agent", "{missing}.zip", "--game", "Pong", "--n-states", "8",
                           "--out", "{bad}"],
    "visionmask train": ["visionmask", "train", "--data", "{missing}", "--agent", "{missing}.zip", "--out", "{bad}"],
    "visionmask explain": ["visionmask", "explain", "--model", "{missing}.safetensors", "--data", "{missing}",
                           "--out", "{bad}/m.png"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("where", ["under a file", "read-only folder"])
def test_unwritable_output_fails_first(name: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("frames,train_return_recent\n")
    if where == "under a file":
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        bad = blocker / "out"
    elif os.geteuid() == 0:  # root writes into read-only folders; nobody creates folders in /proc
        bad = Path("/proc/xrlkit-read-only/out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        bad = locked / "out"
    argv = [a.format(bad=bad, missing=tmp_path / "missing", run=run) for a in COMMANDS[name]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad.parent) in err, err
    assert not (tmp_path / "missing").exists()


def test_curves_of_a_folder_without_a_learning_curve_is_a_clear_error(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert main(["curves", f"a={empty}", "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert "no learning curve in" in err and str(empty) in err and "metrics.csv" in err, err
    assert not (tmp_path / "c.png").exists()


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("frames,train_return_recent,eval_mean,eval_episodes\n"
                                     "4096,1.0,,\n8192,2.0,3.0,10\n12288,4.0,,\n")
    return run


def test_curves_draw_reference_scores_as_labelled_lines(tmp_path: Path) -> None:
    """``--reference LABEL=SCORE`` (e.g. the expert a student is fine-tuned towards) is a labelled
    horizontal line at that score; a reference that is not LABEL=number is a one-line error."""
    import matplotlib

    matplotlib.use("Agg")
    from xrlkit import plotting

    run = _run_folder(tmp_path)
    fig = plotting.training_runs({"a": run}, references={"expert, held-out seeds": 12.5, "student": 7.0})
    lines = {line.get_label(): set(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert lines["expert, held-out seeds: 12.5"] == {12.5} and lines["student: 7.0"] == {7.0}, lines
    assert fig.axes[0].get_ylim()[1] > 12.5  # the line is inside the axes
    assert main(["curves", f"a={run}", "--reference", "expert=12.5", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 10_000


@pytest.mark.parametrize("reference", ["expert=high", "12.5", "=12.5"])
def test_curves_refuse_a_reference_that_is_not_label_and_score(reference: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run = _run_folder(tmp_path)
    assert main(["curves", f"a={run}", "--reference", reference, "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "LABEL=SCORE" in err and reference in err, err
    assert not (tmp_path / "c.png").exists()
