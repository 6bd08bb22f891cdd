"""The study runner: order, resume, failure isolation, combined results."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import nbformat
import pytest

from xrlkit.commands import parse_key_values
from xrlkit.study import (
    combine_results, duration, kernel_manager_class, list_notebooks, notebook_parameters, run_study, study_plan,
)


def _notebook(path, code: str, params_source: str = 'game = "Pong"\nout_dir = ""\nvalue = 1') -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params_source)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def notebook_dir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _notebook(d / "01_first.ipynb", "import os\nfrom xrlkit.study import record\n"
              "cores = ' '.join(map(str, sorted(os.sched_getaffinity(0)))) if hasattr(os, 'sched_getaffinity') else ''\n"
              "record(out_dir, 'first', {'game': game, 'value': value, 'cores': cores})")
    _notebook(d / "02_second.ipynb", "if game == 'Breakout':\n    raise RuntimeError('boom')\nopen(out_dir + '/second.txt', 'a').write('x')")
    return d


def test_list_notebooks_selection(notebook_dir):
    assert [nb.stem for nb in list_notebooks(None, notebook_dir)] == ["01_first", "02_second"]
    assert [nb.stem for nb in list_notebooks("2", notebook_dir)] == ["02_second"]
    with pytest.raises(ValueError, match="no notebook matches"):
        list_notebooks("7", notebook_dir)


def test_study_runs_resumes_and_isolates_failures(notebook_dir, tmp_path):
    out = tmp_path / "study"
    index = run_study("Pong,Breakout", out, parameters={"value": 7}, workers=2, notebook_dir=notebook_dir)
    status = {(r.game, r.notebook): r.status for r in index.itertuples()}
    assert status == {("Pong", "01_first"): "done", ("Pong", "02_second"): "done",
                      ("Breakout", "01_first"): "done", ("Breakout", "02_second"): "failed"}
    assert "boom" in (out / "Breakout" / "02_second.failed").read_text()
    results = combine_results(out)
    assert sorted(results["game"]) == ["Breakout", "Pong"] and set(results["value"]) == {7}
    assert (out / "results.csv").exists() and json.loads((out / "index.json").read_text())

    with pytest.raises(ValueError, match="valeu"):
        run_study("Pong", out, parameters={"valeu": 7}, notebook_dir=notebook_dir)  # a typo is caught up front
    again = run_study("Pong", out, notebook_dir=notebook_dir)
    assert set(again["status"]) == {"skipped (done)"}
    assert (out / "Pong" / "second.txt").read_text() == "x"  # not executed twice


def test_parallel_games_run_on_their_own_cores(notebook_dir, tmp_path, whole_machine):
    """With --workers 2 each game's kernel runs on its half of the cores (one core each on a
    2-core machine), not on all of them: two unpinned kernels oversubscribe the cores."""
    run_study("Pong,Breakout", tmp_path / "study", workers=2, notebook_dir=notebook_dir)
    cores = whole_machine
    shares = [cores[i::2] if len(cores) >= 2 else cores for i in (0, 1)]
    recorded = combine_results(tmp_path / "study")["cores"].astype(str).tolist()
    assert sorted(recorded) == sorted(" ".join(map(str, s)) for s in shares)


def test_study_command_reaches_notebooks_that_record_it(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_plain.ipynb", "from xrlkit.study import record\nrecord(out_dir, 'plain', {'game': game})")
    _notebook(nbs / "02_figures.ipynb", "from xrlkit.study import record\nrecord(out_dir, 'figs', {'game': game, 'command': command})",
              'game = "Pong"\nout_dir = ""\ncommand = "xrlkit study"')
    run_study("Pong", tmp_path / "a", notebook_dir=nbs, command="xrlkit study --games Pong --param seed=3")
    run_study("Pong", tmp_path / "b", notebook_dir=nbs, command="ignored", parameters={"command": "given"})
    recorded = [combine_results(tmp_path / d).dropna(subset=["command"])["command"].tolist() for d in ("a", "b")]
    assert recorded == [["xrlkit study --games Pong --param seed=3"], ["given"]]


def test_study_says_how_long_expert_training_should_take(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_train.ipynb", "pass", 'game = "Pong"\nout_dir = ""\nexpert_frames = 0')
    run_study("Breakout,Asterix", tmp_path / "a", notebook_dir=nbs, parameters={"expert_frames": 400_000})
    said = capsys.readouterr().out
    assert "PPO expert of 400,000 frames for each of 1 game(s)" in said  # Breakout ships one, Asterix not
    assert "expected time: about" in said and "100,000 agent steps" in said
    run_study("Asterix", tmp_path / "b", notebook_dir=nbs)  # no training asked: nothing said
    assert "expected time" not in capsys.readouterr().out


def _study_benchmark(path: Path) -> Path:
    """A study benchmark: 2 cores; notebook 01 takes 600 s with a shipped expert, 900 s without;
    notebook 02 takes 300 s either way."""
    path.write_text(json.dumps({"machine": {"cpu": "Test CPU", "cores": 2}, "runs": [
        {"game": "Breakout", "shipped_expert": True, "seconds": {"01_train": 600.0, "02_explain": 300.0}},
        {"game": "Boxing", "shipped_expert": False, "seconds": {"01_train": 900.0, "02_explain": 300.0}}]}))
    return path


def test_study_plan_estimates_from_the_benchmark(tmp_path):
    bench = _study_benchmark(tmp_path / "study.json")
    nbs = [Path("01_train.ipynb"), Path("02_explain.ipynb")]
    # Breakout ships an expert (900 s), Boxing and Asterix do not (1,200 s each): 3,300 s on 2 cores
    plan = study_plan(["Breakout", "Boxing", "Asterix"], nbs, tmp_path / "out", cpus=4, benchmark=bench)
    assert "3 game(s) x 2 notebook(s): 6 to run" in plan
    assert "1.8 CPU-hours" in plan  # 3,300 s x 2 cores
    assert "about 35 min with 2 game(s) at a time" in plan  # 1,200 | 900 + 1,200 s: 2,100 s
    assert "55 min with 1 game(s)" in study_plan(["Breakout", "Boxing", "Asterix"], nbs, tmp_path / "out", cpus=4,
                                                 workers=1, benchmark=bench)
    # two local workers on 2 CPUs: two games at once, each pinned to 1 core, up to 2x slower than measured
    assert ("about 40 min with 2 game(s) at a time (2 CPUs, 1 per game, not the 2 measured: each taken as 2x slower"
            in study_plan(["Breakout", "Boxing"], nbs, tmp_path / "out", cpus=2, workers=2, benchmark=bench))
    (tmp_path / "out" / "Boxing").mkdir(parents=True)
    (tmp_path / "out" / "Boxing" / "01_train.done").write_text('{"seconds": 1}')
    plan = study_plan(["Breakout", "Boxing"], nbs, tmp_path / "out", cpus=2, benchmark=bench)
    assert "4 notebook(s)" not in plan and "3 to run, 1 already done" in plan and "40 CPU-minutes" in plan
    plan = study_plan(["Boxing"], [*nbs, Path("03_new.ipynb")], tmp_path / "new", cpus=2, benchmark=bench,
                      parameters={"eval_states": 96})
    assert "leave out: Boxing 03_new" in plan and "--param eval_states" in plan
    assert "cannot estimate" in study_plan(["Boxing"], nbs, tmp_path, cpus=2, benchmark=tmp_path / "missing.json")


def test_durations_read_as_hours_from_an_hour_up_and_minutes_below():
    assert [duration(s) for s in (6_600, 3_600, 2_100, 20, 0)] == ["1.8 h", "1.0 h", "35 min", "1 min", "1 min"]
    assert duration(2_400, cpu=True) == "40 CPU-minutes" and duration(6_600, cpu=True) == "1.8 CPU-hours"


def test_study_plan_adds_expert_training(tmp_path):
    from xrlkit.runtime import measured_rate, resolve_runtime

    bench = _study_benchmark(tmp_path / "study.json")
    nbs = [Path("01_train.ipynb")]
    rate = measured_rate("ppo", "nature", resolve_runtime())
    plan = study_plan(["Boxing", "Breakout"], nbs, tmp_path, cpus=2, benchmark=bench, parameters={"expert_frames": 4_000_000})
    if rate is None:
        assert "leave out: Boxing expert training" in plan
    else:  # Boxing trains 1M agent steps; Breakout ships its expert
        assert duration((900 + 600 + 1_000_000 / rate[0]) * 2, cpu=True) in plan and "4,000,000-frame PPO expert" in plan


def test_study_dry_run_runs_nothing(tmp_path, capsys):
    from xrlkit.cli import main

    assert main(["study", "--games", "Pong,Boxing", "--dry-run", "--out", str(tmp_path / "s")]) == 0
    said = capsys.readouterr().out
    assert "plan: 2 game(s) x" in said and not (tmp_path / "s").exists()


@pytest.mark.skipif(os.name == "nt", reason="unix sockets are POSIX only; Windows keeps TCP")
def test_parallel_kernels_get_their_own_unix_sockets():
    # Parallel workers picking TCP ports at once could draw the same one and fail a notebook.
    first, second = kernel_manager_class()(kernel_name="python3"), kernel_manager_class()(kernel_name="python3")
    assert first.transport == second.transport == "ipc"
    assert first.ip != second.ip and Path(first.ip).parent == Path(tempfile.gettempdir())


def test_param_parsing():
    assert parse_key_values(["frames=100", "device=cpu", "xs=[1,2]"], "--param") == {"frames": 100, "device": "cpu", "xs": [1, 2]}
    with pytest.raises(ValueError, match="--param expects KEY=VALUE"):
        parse_key_values(["frames"], "--param")


@pytest.mark.parametrize("notebook", list_notebooks("all"), ids=lambda p: p.stem)
def test_every_parameter_of_the_study_notebooks_can_be_overridden(notebook: Path):
    # papermill skips an assignment it cannot parse (e.g. an '=' inside its comment), which would
    # make `--param name=...` fail as a typo; every top-level name of the cell must be visible.
    import ast

    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert {"game", "seed", "device", "out_dir"} <= assigned
    assert notebook_parameters(notebook) == assigned


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_a_study_with_one_line(tmp_path, workers):
    """Ctrl-C in a terminal reaches the whole process group: the study stops with exit code 130
    and one line saying what was kept, without tracebacks from workers or kernels."""
    import signal
    import subprocess
    import sys
    import time

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_sleep.ipynb", "import pathlib, time\npathlib.Path(out_dir, 'started').write_text('')\n"
                                      "time.sleep(120)", 'game = "Pong"\nout_dir = ""')
    out = tmp_path / "study"
    games = "Pong" if workers == 1 else "Pong,Breakout"
    proc = subprocess.Popen([sys.executable, "-m", "xrlkit.cli", "study", "--notebook-dir", str(nbs), "--games", games,
                             "--workers", str(workers), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            # as in a terminal: a test run started in the background (nohup, &)
                            # ignores SIGINT, and a child would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = [out / g / "started" for g in games.split(",")]
    deadline = time.time() + 90
    while not all(p.exists() for p in started) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert all(p.exists() for p in started), proc.stderr.read().decode() if proc.poll() is not None else "no start"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    text = err.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "ZMQError" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "run the same command again" in lines[0], text
