"""xrlkit.tables: recomputing some games keeps the other games' rows."""

from __future__ import annotations

import pandas as pd
import pytest

from xrlkit.tables import rows_of_other_games


def test_rows_of_other_games_keeps_only_the_games_not_recomputed(tmp_path):
    rows = [{"game": g, "method": "rise", "measure": "pointing", "mean": m, "n_states": 150}
            for g, m in (("Pong", 0.7), ("Breakout", 0.5), ("Pong", 0.2))]
    pd.DataFrame(rows).to_csv(tmp_path / "grounding.csv", index=False)
    (kept,) = rows_of_other_games(tmp_path / "grounding.csv", ["Breakout"])
    assert kept["game"].tolist() == ["Pong", "Pong"] and kept["mean"].tolist() == [0.7, 0.2]
    (everything,) = rows_of_other_games(tmp_path / "grounding.csv", [])
    assert len(everything) == 3


def test_rows_of_other_games_is_empty_on_a_first_run_and_refuses_a_table_without_games(tmp_path):
    assert rows_of_other_games(tmp_path / "none.csv", ["Breakout"]) == []
    pd.DataFrame({"metric": ["insertion"], "value": [0.5]}).to_csv(tmp_path / "flat.csv", index=False)
    with pytest.raises(ValueError, match="no 'game' column"):
        rows_of_other_games(tmp_path / "flat.csv", ["Breakout"])
