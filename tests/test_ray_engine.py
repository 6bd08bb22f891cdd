"""The study on a real local Ray instance: failures isolated and retried, re-runs skip what
finished, a killed worker's task is resubmitted, and the results equal the local engine's."""

from __future__ import annotations

import pandas as pd
import pytest

from xrlkit.study import combine_results, run_study
from test_study import _notebook  # tests/ is on sys.path (no package), as for every test module

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _study_notebooks(folder, fix_flag):
    folder.mkdir()
    _notebook(folder / "01_play.ipynb", "from xrlkit.study import record\nrecord(out_dir, 'play', {'game': game, 'value': value * 2})")
    _notebook(folder / "02_explain.ipynb",
              f"import os\nif game == 'Breakout' and not os.path.exists({str(fix_flag)!r}):\n    raise RuntimeError('boom')\n"
              "from xrlkit.study import record\nrecord(out_dir, 'explain', {'game': game, 'value': value + 1})")
    return folder


def test_ray_study_isolates_a_failure_reruns_only_it_and_matches_the_local_engine(local_ray, tmp_path):
    fix = tmp_path / "fixed"
    nbs = _study_notebooks(tmp_path / "nbs", fix)
    out = tmp_path / "ray"
    index = run_study("Pong,Breakout", out, parameters={"value": 3}, notebook_dir=nbs, engine="ray", retries=1)
    status = {(r.game, r.notebook): r.status for r in index.itertuples()}
    assert status == {("Pong", "01_play"): "done", ("Pong", "02_explain"): "done",
                      ("Breakout", "01_play"): "done", ("Breakout", "02_explain"): "failed"}
    failed = index[index.status == "failed"].iloc[0]
    assert failed.attempts == 2 and "boom" in open(failed.error).read()  # run twice, then reported
    assert "failed" in (out / "index.md").read_text()

    fix.touch()
    again = run_study("Pong,Breakout", out, parameters={"value": 3}, notebook_dir=nbs, engine="ray")
    status = {(r.game, r.notebook): r.status for r in again.itertuples()}
    assert status == {("Pong", "01_play"): "skipped (done)", ("Pong", "02_explain"): "skipped (done)",
                      ("Breakout", "01_play"): "skipped (done)", ("Breakout", "02_explain"): "done"}

    run_study("Pong,Breakout", tmp_path / "local", parameters={"value": 3}, notebook_dir=nbs, workers=2)
    keys = ["game", "table"]
    on_ray = combine_results(out).sort_values(keys).reset_index(drop=True)
    local = combine_results(tmp_path / "local").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(on_ray, local)
    assert sorted(on_ray["value"]) == [4, 4, 6, 6]


def test_a_task_whose_worker_dies_is_resubmitted(local_ray, tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    marker = tmp_path / "killed-once"
    # the kernel's parent is the Ray worker running the task: the first try kills it mid-notebook
    _notebook(nbs / "01_crash.ipynb",
              f"import os, signal\nif not os.path.exists({str(marker)!r}):\n    open({str(marker)!r}, 'w').close()\n"
              "    os.kill(os.getppid(), signal.SIGKILL)\n"
              "from xrlkit.study import record\nrecord(out_dir, 'survived', {'game': game})")
    index = run_study("Pong", tmp_path / "out", notebook_dir=nbs, engine="ray", retries=1)
    assert marker.exists() and index.status.tolist() == ["done"]
    assert combine_results(tmp_path / "out")["table"].tolist() == ["survived"]

    marker.unlink()
    no_retry = run_study("Pong", tmp_path / "out2", notebook_dir=nbs, engine="ray", retries=0)
    assert no_retry.status.tolist() == ["failed"] and "died" in no_retry.error.iloc[0].lower()


def test_unknown_engine_and_bad_retries(tmp_path):
    with pytest.raises(ValueError, match="unknown engine"):
        run_study("Pong", tmp_path, engine="spark")
    with pytest.raises(ValueError, match="retries"):
        run_study("Pong", tmp_path, retries=-1)
