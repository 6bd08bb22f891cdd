"""Result tables under ``figures/`` that hold one block of rows per game (``faithfulness.csv``,
``randomisation.csv``, ``grounding.csv``): a script that recomputes only some games keeps the rows
of every other game from the table a previous run wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd


def rows_of_other_games(table: Path, games: Sequence[str]) -> list[pd.DataFrame]:
    """The rows of the CSV ``table`` (it has a ``game`` column) whose game is not in ``games``, as a
    one-item list ready to concatenate with the recomputed games' tables; ``[]`` if ``table`` does not
    exist yet (a first run). Numbers are read back exactly (``round_trip``), so the kept rows are
    written again byte for byte."""
    if not table.exists():
        return []
    old = pd.read_csv(table, float_precision="round_trip")
    if "game" not in old.columns:
        raise ValueError(f"{table} has no 'game' column (columns: {', '.join(old.columns)}): not a per-game result table")
    return [old[~old["game"].isin(list(games))]]
