"""The ``Agent`` protocol every agent in xrlkit implements, and shared helpers.

An agent maps a batch of stacked frames to action logits. Explainers, metrics, VisionMask and
plots depend on this protocol alone.

* ``obs``: ``[B, 4, 84, 84]``, a numpy array or tensor, ``uint8`` or float, values in [0, 255].
  Float input is accepted so that masked / perturbed / interpolated states (which are not
  integers) can be scored, and so that gradients can flow back to the input.
* ``logits(obs) -> float [B, A]`` on ``agent.device``. For policy-gradient agents these are the
  policy logits; for value-based agents (DQN, Rainbow) they are the Q-values, whose softmax is
  used wherever a probability is needed (insertion / deletion curves, VisionMask's loss).
* ``act(obs, epsilon)`` plays: the argmax of the logits, or, for a policy-gradient agent whose
  ``act_mode`` is ``"sample"``, a draw from the softmax of its logits (how RL-Zoo scores its Atari
  PPO / A2C agents). Explanations are always of the logits, so of the greedy action.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from xrlkit.agents.encoders import upsample_attention
from xrlkit.envs import check_obs
from xrlkit.registry import choose
from xrlkit.shapes import FRAME_SHAPE


@runtime_checkable
class Agent(Protocol):
    """What explainers and metrics need from an agent."""

    n_actions: int
    action_meanings: tuple[str, ...]
    device: torch.device

    def logits(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Action logits ``float [B, A]`` for stacked frames ``[B, 4, 84, 84]`` in [0, 255]."""
        ...

    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float = 0.0) -> np.ndarray:
        """Greedy (or epsilon-greedy) actions ``int64 [B]``."""
        ...


def as_obs_tensor(obs: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Validate ``[B, 4, 84, 84]`` and return it as a float32 tensor in [0, 255] on ``device``.

    Float tensors keep their autograd graph, so gradients reach the caller's input.
    """
    check_obs(obs)
    t = torch.as_tensor(obs, device=device)
    return t.float() if t.dtype != torch.float32 else t


#: how an agent picks actions from its logits: the argmax, or a draw from their softmax
ACT_MODES = ("greedy", "sample")


def choose_actions(logits: torch.Tensor, epsilon: float, rng: np.random.Generator, mode: str = "greedy") -> np.ndarray:
    """Actions ``int64 [B]`` from ``logits [B, A]``: the argmax (``mode="greedy"``) or a draw from
    ``softmax(logits)`` (``mode="sample"``), each replaced by a uniform action with probability
    ``epsilon``."""
    if mode == "greedy":
        actions = logits.argmax(dim=1).cpu().numpy()
    elif mode == "sample":
        probs = torch.softmax(logits.detach().double(), dim=1).cpu().numpy()
        u = rng.random((len(probs), 1))
        actions = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), logits.shape[1] - 1)
    else:
        choose("act mode", mode, ACT_MODES)
    if epsilon > 0:
        explore = rng.random(len(actions)) < epsilon
        actions[explore] = rng.integers(0, logits.shape[1], int(explore.sum()))
    return actions


class ActMode:
    """Mixin for agents with a policy: an ``act_mode`` attribute, ``"greedy"`` (argmax of the
    logits) or ``"sample"`` (a draw from their softmax), checked when set. A subclass whose logits
    are not a policy (Q-values) sets ``sampling_refused`` to the reason."""

    sampling_refused: str | None = None

    @property
    def act_mode(self) -> str:
        return self._act_mode

    @act_mode.setter
    def act_mode(self, mode: str) -> None:
        choose("act mode", mode, ACT_MODES)
        if mode == "sample" and self.sampling_refused:
            raise ValueError(f"{self.sampling_refused}; use act_mode='greedy'")
        self._act_mode = mode


@torch.no_grad()
def batched_logits(agent: Agent, obs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``agent.logits`` of ``obs [N, 4, 84, 84]`` computed ``batch_size`` states at a time, without
    gradients, as ``float32 [N, A]`` (under autocast too): for more states than fit one pass."""
    return torch.cat([agent.logits(chunk).float() for chunk in obs.split(batch_size)])


@torch.no_grad()
def greedy_actions(agent: Agent, obs: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The action an explanation is about: the argmax of ``agent.logits`` for each state of
    ``obs [B, 4, 84, 84]``, ``int64 [B]``, whatever the agent's ``act_mode`` (a sampling agent's
    ``act`` would give a random draw, not the action its policy prefers)."""
    check_obs(obs)
    return np.concatenate([agent.logits(obs[i:i + batch_size]).argmax(dim=1).cpu().numpy()
                           for i in range(0, len(obs), batch_size)]).astype(np.int64)


class TorchAgent(nn.Module):
    """Base class for agents whose logits come from a torch network.

    Subclasses implement :meth:`forward` on float input in [0, 1] of shape ``[B, 4, 84, 84]``.
    """

    def __init__(self, n_actions: int, action_meanings: tuple[str, ...] | None = None, seed: int = 0) -> None:
        super().__init__()
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        meanings = tuple(action_meanings) if action_meanings else tuple(f"ACTION_{i}" for i in range(n_actions))
        if len(meanings) != n_actions:
            raise ValueError(f"{len(meanings)} action meanings for {n_actions} actions")
        self.n_actions = n_actions
        self.action_meanings = meanings
        self._rng = np.random.default_rng(seed)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def logits(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self(as_obs_tensor(obs, self.device) / 255.0)

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float = 0.0) -> np.ndarray:
        return choose_actions(self.logits(obs), epsilon, self._rng)

    @property
    def has_attention(self) -> bool:
        """Whether the agent's encoder keeps an attention map (IFE, attention CNNs)."""
        return hasattr(getattr(self, "encoder", None), "attention")

    def attention(self, obs: np.ndarray | torch.Tensor, size: tuple[int, int] = FRAME_SHAPE,
                  mode: str = "nearest") -> torch.Tensor:
        """The encoder's attention for each state, upsampled to ``size``: ``float [B, *size]``.

        The 14x14 HUE attention sums to 1; each cell covers a 6x6 patch of the 84x84 input, so
        ``mode="nearest"`` shows exactly those patches. Use ``size=(210, 160)`` to overlay it on
        the raw RGB frame (the 84x84 frame is a resize of the whole screen). Upsampled maps are
        rescaled to keep summing to 1.
        """
        if not self.has_attention:
            raise ValueError("this agent's encoder has no attention map; use the 'ife' encoder")
        with torch.no_grad():
            self(as_obs_tensor(obs, self.device) / 255.0)
            att = self.encoder.attention  # type: ignore[attr-defined]
        return upsample_attention(att, size, mode)


class RandomAgent:
    """Uniformly random policy (constant zero logits); the floor every trained agent must beat."""

    def __init__(self, n_actions: int, action_meanings: tuple[str, ...] | None = None, seed: int = 0) -> None:
        self.n_actions = n_actions
        self.action_meanings = tuple(action_meanings) if action_meanings else tuple(f"ACTION_{i}" for i in range(n_actions))
        self.device = torch.device("cpu")
        self._rng = np.random.default_rng(seed)

    def logits(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        check_obs(obs)
        return torch.zeros(obs.shape[0], self.n_actions)

    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float = 0.0) -> np.ndarray:
        check_obs(obs)
        return self._rng.integers(0, self.n_actions, obs.shape[0])
