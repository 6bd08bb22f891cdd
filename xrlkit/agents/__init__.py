"""Agents: the ``Agent`` protocol, Q-network agents and their encoders."""

from xrlkit.agents.base import Agent, RandomAgent, TorchAgent, as_obs_tensor
from xrlkit.agents.encoders import IFE, ImpalaCNN, NatureCNN, make_encoder
from xrlkit.agents.qnet import QAgent, QNetConfig

__all__ = [
    "Agent", "RandomAgent", "TorchAgent", "as_obs_tensor", "IFE", "ImpalaCNN", "NatureCNN",
    "make_encoder", "QAgent", "QNetConfig",
]
