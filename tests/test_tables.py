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


def test_kept_rows_are_written_back_byte_for_byte(tmp_path):
    """Re-running one game must not touch another game's numbers in the last digit (pandas' default
    float parser is not exact: 0.024444444444444442 came back as 0.0244444444444444)."""
    table = tmp_path / "grounding.csv"
    pd.DataFrame({"game": ["MsPacman", "Breakout"], "mean": [0.024444444444444442, 0.1],
                  "ci_low": [0.008143518518518527, 0.0]}).to_csv(table, index=False)
    before = table.read_text().splitlines()[1]
    (kept,) = rows_of_other_games(table, ["Breakout"])
    pd.concat([kept]).to_csv(table, index=False)
    assert table.read_text().splitlines()[1] == before
