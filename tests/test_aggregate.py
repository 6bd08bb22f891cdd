"""Aggregates over seeds and games with rliable, the score table of training runs, and the
IFE-against-baselines script that combines them."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xrlkit.aggregate import interval_estimates, score_matrices
from xrlkit.cli import main
from xrlkit.games import REFERENCE_SCORES
from xrlkit.sweep import score_table

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--algo", "ppo", "--frames", "256", "--n-envs", "2", "--eval-episodes", "1", "--eval-max-steps", "20",
        "--threads", "1", "--env-threads", "1", "--set", "n_steps=32", "--set", "batch_size=32", "--set", "n_epochs=1",
        "--no-progress"]


def scores(rows: dict[str, list[float]], game: str = "Pong") -> pd.DataFrame:
    return pd.DataFrame([{"game": game, "encoder": enc, "seed": i, "score": s}
                         for enc, values in rows.items() for i, s in enumerate(values)])


def test_iqm_is_the_mean_of_the_middle_half_with_an_interval_around_it():
    table = scores({"ife": [0, 1, 2, 3], "nature": [10, 11, 12, 100]})
    est = interval_estimates(table, reps=500).set_index(["method", "measure"])
    assert est.loc[("ife", "iqm"), "value"] == pytest.approx(1.5)  # mean of 1 and 2
    assert est.loc[("nature", "iqm"), "value"] == pytest.approx(11.5)  # the outlier 100 is trimmed
    assert est.loc[("nature", "mean"), "value"] == pytest.approx(33.25)
    for row in est.itertuples():
        assert row.ci_low <= row.value <= row.ci_high
    assert est.loc[("ife", "iqm"), "ci_high"] < est.loc[("nature", "iqm"), "ci_low"]
    assert set(est["n_runs"]) == {4} and not est["normalised"].any()  # one game: raw scores


def test_several_games_are_human_normalised_before_aggregating():
    random_score, human = REFERENCE_SCORES["Breakout"]
    table = pd.concat([scores({"ife": [random_score, human]}, "Breakout"),
                       scores({"ife": [REFERENCE_SCORES["Pong"][1]] * 2}, "Pong")])
    matrix = score_matrices(table)["ife"]
    assert matrix.shape == (2, 2)  # [runs, games], games sorted: Breakout, Pong
    np.testing.assert_allclose(matrix, [[0.0, 1.0], [1.0, 1.0]])
    assert interval_estimates(table, measures=["mean"], reps=200)["value"].item() == pytest.approx(0.75)


def test_uneven_or_incomplete_tables_are_refused():
    with pytest.raises(ValueError, match="different seed counts"):
        score_matrices(pd.concat([scores({"ife": [1, 2]}, "Pong"), scores({"ife": [1]}, "Breakout")]))
    with pytest.raises(ValueError, match="has no run of Pong"):
        score_matrices(pd.concat([scores({"ife": [1]}, "Pong"), scores({"ife": [1], "nature": [2]}, "Breakout")]))
    with pytest.raises(ValueError, match="runs per game differ"):
        score_matrices(scores({"ife": [1, 2], "nature": [1]}))
    with pytest.raises(ValueError, match="lacks columns"):
        score_matrices(pd.DataFrame({"game": ["Pong"], "score": [1.0]}))
    with pytest.raises(ValueError, match="unknown measure 'iqr'; .* did you mean 'iqm'"):
        interval_estimates(scores({"ife": [1, 2]}), measures=["iqr"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two seeds each of a tiny Nature and a tiny IFE PPO run on Breakout, one folder per encoder."""
    root = tmp_path_factory.mktemp("ivb")
    for encoder in ("nature", "ife"):
        for seed in (1, 2):
            assert main(["train", "--game", "Breakout", "--encoder", encoder, "--seed", str(seed),
                         "--out", str(root / encoder / f"Breakout-s{seed}"), *TINY]) == 0
    return root


def test_score_table_reads_every_finished_run_from_its_metadata(runs, tmp_path):
    table = score_table(runs)
    assert sorted(zip(table["encoder"], table["seed"])) == [("ife", 1), ("ife", 2), ("nature", 1), ("nature", 2)]
    assert (table["game"] == "Breakout").all() and (table["frames"] >= 256).all() and table["score"].notna().all()
    assert len(score_table(runs / "ife" / "Breakout-s1")) == 1  # a run folder itself
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(FileNotFoundError, match="no finished training run"):
        score_table(tmp_path)
    with pytest.raises(FileNotFoundError, match="no sweep folder"):
        score_table(tmp_path / "nowhere")


def load_script():
    spec = importlib.util.spec_from_file_location("ife_vs_baselines", ROOT / "scripts" / "ife_vs_baselines.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_comparison_script_writes_table_intervals_and_figures(runs, tmp_path):
    out = tmp_path / "figures"
    assert load_script().main([str(runs), "--out", str(out), "--reps", "200"]) == 0
    table = pd.read_csv(out / "ife_vs_baselines.csv")
    assert {"game", "encoder", "seed", "frames", "score"} <= set(table.columns) and len(table) == 4
    est = pd.read_csv(out / "ife_vs_baselines_iqm.csv")
    assert set(est["method"]) == {"nature", "ife"} and set(est["measure"]) == {"iqm", "mean", "median"}
    for name in ("ife_vs_baselines_iqm.png", "ife_vs_baselines_curves.png"):
        assert (out / name).stat().st_size > 10_000


def test_the_comparison_script_refuses_unequal_budgets(runs, tmp_path, capsys):
    assert main(["train", "--game", "Breakout", "--encoder", "ife", "--seed", "3", "--out",
                 str(tmp_path / "longer" / "Breakout-s3"), *TINY[:2], "--frames", "512", *TINY[4:]]) == 0
    with pytest.raises(SystemExit):
        load_script().main([str(runs), str(tmp_path / "longer"), "--out", str(tmp_path / "figures")])
    assert "frame budgets differ within Breakout" in capsys.readouterr().err
    assert not (tmp_path / "figures" / "ife_vs_baselines.csv").exists()  # nothing recorded


def test_the_comparison_keeps_a_record_that_runs_of_a_later_session_join(runs, tmp_path, capsys):
    script, out = load_script(), tmp_path / "figures"
    earlier = tmp_path / "earlier"  # one session trains the Nature runs; their folders are gone later
    shutil.copytree(runs / "nature", earlier / "nature")
    assert script.main([str(earlier), "--out", str(out), "--reps", "200"]) == 0
    shutil.rmtree(earlier)
    assert script.main([str(runs / "ife"), "--out", str(out), "--reps", "200"]) == 0
    table = pd.read_csv(out / "ife_vs_baselines.csv")
    assert sorted(zip(table["encoder"], table["seed"])) == [("ife", 1), ("ife", 2), ("nature", 1), ("nature", 2)]
    assert all((out / c).is_file() for c in table["curve"])
    assert set(pd.read_csv(out / "ife_vs_baselines_iqm.csv")["method"]) == {"nature", "ife"}

    table.loc[table["encoder"] == "ife", "score"] = 999.0  # a run given again replaces its row
    table.to_csv(out / "ife_vs_baselines.csv", index=False)
    assert script.main([str(runs / "ife" / "Breakout-s1"), "--out", str(out), "--reps", "200"]) == 0
    again = pd.read_csv(out / "ife_vs_baselines.csv").set_index(["encoder", "seed"])["score"]
    assert len(again) == 4 and again[("ife", 2)] == 999.0
    assert again[("ife", 1)] == score_table(runs / "ife" / "Breakout-s1")["score"].item()

    (out / "ife_vs_baselines_curves.png").unlink()  # no folder: the figures from the record alone
    assert script.main(["--out", str(out), "--reps", "200"]) == 0
    assert (out / "ife_vs_baselines_curves.png").stat().st_size > 10_000

    (out / table["curve"][0]).unlink()
    with pytest.raises(SystemExit):
        script.main(["--out", str(out)])
    assert "names learning curves that are not there" in capsys.readouterr().err
    (out / "ife_vs_baselines.csv").write_text("game,seed\nPong,1\n")
    with pytest.raises(SystemExit):
        script.main([str(runs), "--out", str(out)])
    err = capsys.readouterr().err
    assert "lacks columns" in err and "delete it to start afresh" in err
    with pytest.raises(SystemExit):
        script.main(["--out", str(tmp_path / "empty")])
    assert "no run recorded" in capsys.readouterr().err
