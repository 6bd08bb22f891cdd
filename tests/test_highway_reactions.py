"""scripts/highway_reactions.py: the gap to the car ahead in the ego car's lane, and the report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from xrlkit.agents import QAgent, QNetConfig
from xrlkit.checkpoint import save_agent
from xrlkit.envs import action_meanings, make_env


def _script(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import highway_reactions

    return highway_reactions


def test_gap_ahead_is_the_nearest_car_in_front_in_the_same_lane(monkeypatch):
    script = _script(monkeypatch)
    env = make_env("highway-fast-v0", seed=3)
    env.reset(seed=3)
    ego = env.unwrapped.vehicle
    lane = env.unwrapped.road.network.get_lane(ego.lane_index)
    ahead = [lane.local_coordinates(v.position)[0] - lane.local_coordinates(ego.position)[0]
             for v in env.unwrapped.road.vehicles
             if v is not ego and lane.on_lane(v.position) and lane.local_coordinates(v.position)[0] > lane.local_coordinates(ego.position)[0]]
    assert script.gap_ahead(env) == (min(ahead) if ahead else np.inf)
    env.close()


def test_the_report_counts_every_step_of_every_episode(monkeypatch, tmp_path, capsys):
    script = _script(monkeypatch)
    agent = QAgent(5, QNetConfig("nature"), action_meanings("highway-fast-v0"), seed=0).eval()
    path = save_agent(agent, tmp_path / "a.safetensors", game="highway-fast-v0", protocol="highway")
    monkeypatch.setattr(sys, "argv", ["highway_reactions.py", str(path), "--episodes", "1", "--act-mode", "greedy"])
    assert script.main() == 0
    out = capsys.readouterr().out.splitlines()
    steps = int(out[0].split(", ")[-1].split()[0])
    close, far = (int(line.split("(")[1].split()[0]) for line in out[2:4])
    assert 1 <= steps <= 30 and close + far == steps
    shares = [int(part.split()[-1].rstrip("%")) for part in out[1].split(", ")]
    assert len(shares) == 5 and 98 <= sum(shares) <= 102
