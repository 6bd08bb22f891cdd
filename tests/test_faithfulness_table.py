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
