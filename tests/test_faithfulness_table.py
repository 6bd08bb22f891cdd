"""scripts/faithfulness_table.py: recomputing some games keeps the other games' rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def test_games_not_recomputed_keep_their_rows_in_the_per_game_form(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import faithfulness_table

    rows = [{"game": g, "explainer": "rise", "metric": "insertion", "reference": "background", "mean": m,
             "ci_low": m - 0.1, "ci_high": m + 0.1, "n_states": 96, "beats_random": True} for g, m in (("Pong", 0.7), ("Doom", 0.5))]
    pd.DataFrame(rows).to_csv(tmp_path / "faithfulness.csv", index=False)
    pd.DataFrame({"explainer": ["rise", "rise"], "spearman": [0.1, 0.9], "game": ["Pong", "Doom"]}).to_csv(
        tmp_path / "randomisation.csv", index=False)
    (kept,), (kept_random,) = faithfulness_table.kept_rows(tmp_path, ["Doom"])
    assert kept["game"].tolist() == ["Pong"] and kept["value"].tolist() == [0.7] and "reference" not in kept
    assert kept_random["game"].tolist() == ["Pong"]
    assert faithfulness_table.kept_rows(tmp_path / "nothing-yet", ["Doom"]) == ([], [])


def test_summary_table_orders_by_road_gap_and_marks_what_random_matches(monkeypatch):
    """The README's per-game table: best ROAD gap first, `·` where a mean is no better than random,
    ranks by SRG and ROAD gap, ✗ where the randomisation test fails."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import faithfulness_table

    metrics = list(faithfulness_table.SUMMARY_COLUMNS)
    lower = {"deletion", "road_morf"}
    value = {"rise": 0.6, "random": 0.3, "grad": 0.4}
    rows = [{"explainer": e, "metric": m, "value": (1 - v if m in lower else v), "higher_is_better": m not in lower,
             "beats_random": e == "rise" or m != "insertion"} for e, v in value.items() for m in metrics]
    rand = pd.DataFrame({"spearman": [0.1, 1.0, 0.9], "passes": [True, False, False]}, index=["rise", "random", "grad"])
    lines = faithfulness_table.summary_table(pd.DataFrame(rows), rand).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| rise", "| grad", "| random"]
    grad = lines[3].split(" | ")
    assert grad[3] == "0.400 ·" and grad[1] == "0.400" and grad[7] == "0.400 (2)" and grad[-1] == "0.90 ✗ |"
    assert lines[2].endswith("| 0.10 |") and "·" not in lines[4]


def test_visionmask_against_each_reads_the_paired_gain_from_visionmasks_side(monkeypatch):
    """``vs_visionmask`` is the other explainer's gain over VisionMask; the section flips it, so a
    map VisionMask beats shows a positive gain marked ▲, one it loses to a negative one marked ▼."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import faithfulness_table

    rows = pd.DataFrame([
        {"explainer": "rise", "metric": "insertion", "vs_visionmask": -0.05, "vs_visionmask_low": -0.08, "vs_visionmask_high": -0.02},
        {"explainer": "sarfa", "metric": "insertion", "vs_visionmask": 0.04, "vs_visionmask_low": 0.01, "vs_visionmask_high": 0.07},
        {"explainer": "grad", "metric": "insertion", "vs_visionmask": 0.01, "vs_visionmask_low": -0.02, "vs_visionmask_high": 0.03},
        {"explainer": "visionmask", "metric": "insertion", "vs_visionmask": None, "vs_visionmask_low": None, "vs_visionmask_high": None},
    ])
    text = "\n".join(faithfulness_table.visionmask_against_each(rows))
    lines = {line.split()[0]: line for line in text.splitlines() if line[:4] in ("rise", "sarf", "grad")}
    assert lines["rise"].endswith("+0.050 [+0.020, +0.080] ▲")
    assert lines["sarfa"].endswith("-0.040 [-0.070, -0.010] ▼")
    assert lines["grad"].endswith("-0.010 [-0.030, +0.020]")
    assert "visionmask " not in text.split("```")[1]  # VisionMask is not compared with itself
    assert faithfulness_table.visionmask_against_each(rows.drop(columns=["vs_visionmask"])) == []


def test_randomisation_rows_are_computed_again_when_a_model_file_changes(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import argparse

    import faithfulness_table

    files = {role: tmp_path / f"{role}.safetensors" for role in ("expert", "visionmask")}
    for path in files.values():
        path.write_bytes(b"weights")
    monkeypatch.setattr(faithfulness_table, "shipped", lambda game, role: files[role])
    runs: list[int] = []

    def randomisation(game, has_vm, args):
        runs.append(1)
        return pd.DataFrame({"explainer": ["visionmask"], "spearman": [float(len(runs))], "game": [game]})

    monkeypatch.setattr(faithfulness_table, "randomisation", randomisation)
    args = argparse.Namespace(work=tmp_path, randomisation_states=4, every=30, seed=0)
    rows = lambda: faithfulness_table.randomisation_rows("Pong", True, args)["spearman"].tolist()  # noqa: E731
    assert rows() == [1.0] and rows() == [1.0]  # kept in --work: computed once
    files["visionmask"].write_bytes(b"retrained")
    assert rows() == [2.0]  # a retrained VisionMask is tested again
    (tmp_path / "Pong-randomisation.json").write_text("{not json")
    assert rows() == [3.0]  # an unreadable fingerprint: computed again, not an error
    args.randomisation_states = 8
    assert rows() == [4.0] and rows() == [4.0]
