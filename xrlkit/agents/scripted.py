"""Scripted agents: hand-written policies behind the :class:`~xrlkit.agents.base.Agent` protocol.

:class:`PongTracker` reads the ball and its own paddle off the stacked frames and moves the paddle
to where the ball will cross the paddle's column. Its decision depends on the ball and the right
paddle and on nothing else (:meth:`PongTracker.objects` gives their boxes), so it is a known answer
for explainers that need only logits (occlusion, RISE): a faithful map of it points there. It has no
gradients, so gradient explainers and VisionMask cannot explain it. It can teach ``xrlkit distill``
(``--teacher pong-tracker``), though on a 2-core CPU a Nature-CNN student did not learn from it:
after 2 DAgger rounds of 20k states (4 passes each, lr 1e-3) it still always chose NOOP, the
teacher's most common action (69% of its states), and 20 passes of plain behaviour cloning over
40k of its states ended at the same loss (the student scored -21).

Geometry. It works on the ``rlzoo`` / ``ifepaper`` observations (the whole 210x160 screen resized
to 84x84, grayscale): the playfield lies between the walls at rows 14-76, the agent's (right,
green) paddle is in columns 73-75 and the opponent's in columns 8-10; the background is gray
level 87. Other protocols (e.g. cropped screens) are refused by :func:`make_scripted_agent`.
"""

from __future__ import annotations

import numpy as np
import torch

from xrlkit.agents.base import as_obs_tensor, choose_actions
from xrlkit.envs import action_meanings
from xrlkit.registry import choose

_TOP, _BOTTOM = 14, 77  # playfield rows [_TOP, _BOTTOM)
_PADDLE_COLS = slice(73, 76)  # the agent's paddle
_BALL_COLS = slice(11, 73)  # between the paddles (the ball is ignored while it overlaps one)
_BACKGROUND = 87
_HIT_COL = 72.0  # column where the ball meets the paddle


class PongTracker:
    """Scripted Pong player: paddle to the predicted crossing point of the ball.

    ``logits(obs [B, 4, 84, 84]) -> float [B, 6]``: ``margin`` for the chosen action (``NOOP``,
    ``RIGHT`` = up or ``LEFT`` = down), 0 for the others. The ball's position comes from the newest
    frame, its velocity from the frame before; a ball moving toward the agent is followed to the
    paddle's column with bounces off the walls, otherwise the paddle follows the ball's height (or
    returns to the middle when no ball is in play).

    Steering. One step of ``RIGHT`` / ``LEFT`` moves the paddle about 10 rows over the next three
    steps (3, 5, 1.5 rows at frame-skip 4), so a bang-bang controller overshoots and oscillates
    around the ball. The tracker presses toward the target only when the paddle is more than
    ``dead_zone`` rows from it and is not already coasting toward it, or when it is more than
    ``far`` rows away.
    """

    def __init__(self, margin: float = 4.0, dead_zone: float = 3.0, far: float = 10.0, seed: int = 0) -> None:
        self.action_meanings = action_meanings("Pong")
        self.n_actions = len(self.action_meanings)
        self.device = torch.device("cpu")
        self.margin = margin
        self.dead_zone = dead_zone
        self.far = far
        self.meta = {"game": "Pong", "protocol": "rlzoo", "algo": "scripted", "agent": "pong-tracker"}
        self._up, self._down = self.action_meanings.index("RIGHT"), self.action_meanings.index("LEFT")
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def _ball_pixels(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the ball's pixels in one ``[84, 84]`` frame (empty: no ball)."""
        rows, cols = np.nonzero(np.abs(frame[_TOP:_BOTTOM, _BALL_COLS].astype(np.int16) - _BACKGROUND) > 20)
        return rows + _TOP, cols + _BALL_COLS.start

    @staticmethod
    def _paddle_rows(frame: np.ndarray) -> np.ndarray:
        """Rows the agent's paddle covers in one ``[84, 84]`` frame (empty: off the playfield)."""
        column = frame[_TOP:_BOTTOM, _PADDLE_COLS].astype(np.int16).max(axis=1)
        return np.nonzero(column - _BACKGROUND > 20)[0] + _TOP

    def _ball(self, frame: np.ndarray) -> tuple[float, float] | None:
        """(row, column) of the ball's centre in one ``[84, 84]`` frame, or ``None``."""
        rows, cols = self._ball_pixels(frame)
        return (float(rows.mean()), float(cols.mean())) if len(rows) else None

    def _paddle(self, frame: np.ndarray) -> float | None:
        """Row of the centre of the agent's paddle, or ``None`` when it is off the playfield."""
        rows = self._paddle_rows(frame)
        return float(rows.mean()) if len(rows) else None

    def objects(self, state: np.ndarray | torch.Tensor) -> list[tuple[float, float, float, float]]:
        """What the decision on one state ``[4, 84, 84]`` reads, as ``(x, y, w, h)`` boxes in 84x84
        pixels (:mod:`xrlkit.grounding`'s format): the ball and the agent's paddle in each of the
        last two frames where they are visible. A faithful saliency map of this agent points here."""
        frames = as_obs_tensor(torch.as_tensor(state)[None], "cpu")[0].detach().numpy()
        boxes = []
        for frame in frames[-2:]:
            rows, cols = self._ball_pixels(frame)
            if len(rows):
                boxes.append((float(cols.min()), float(rows.min()), float(np.ptp(cols) + 1), float(np.ptp(rows) + 1)))
            rows = self._paddle_rows(frame)
            if len(rows):
                boxes.append((float(_PADDLE_COLS.start), float(rows.min()), 3.0, float(np.ptp(rows) + 1)))
        return boxes

    def _target(self, new: tuple[float, float] | None, old: tuple[float, float] | None) -> float:
        middle = (_TOP + _BOTTOM - 1) / 2
        if new is None:
            return middle
        y, x = new
        if old is None or new[1] <= old[1]:  # moving away (or just served): follow its height
            return y
        dy, dx = y - old[0], x - old[1]
        y_hit = y + dy * (_HIT_COL - x) / dx
        low, high = float(_TOP), float(_BOTTOM - 1)
        span = high - low  # unfold the bounces off the two walls
        phase = (y_hit - low) % (2 * span)
        return low + (phase if phase <= span else 2 * span - phase)

    def choose(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """The scripted action ``int64 [B]`` for each state."""
        frames = as_obs_tensor(obs, "cpu").detach().numpy()
        actions = np.zeros(len(frames), dtype=np.int64)
        for i, state in enumerate(frames):
            paddle, before = self._paddle(state[-1]), self._paddle(state[-2])
            if paddle is None:
                continue
            error = self._target(self._ball(state[-1]), self._ball(state[-2])) - paddle
            coasting = before is not None and (paddle - before) * error > 0
            if abs(error) > self.far or (abs(error) > self.dead_zone and not coasting):
                actions[i] = self._down if error > 0 else self._up
        return actions

    def logits(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        chosen = torch.as_tensor(self.choose(obs))
        return torch.nn.functional.one_hot(chosen, self.n_actions).float() * self.margin

    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float = 0.0) -> np.ndarray:
        return choose_actions(self.logits(obs), epsilon, self._rng)


#: name -> (game, constructor) of every scripted agent
SCRIPTED = {"pong-tracker": ("Pong", PongTracker)}


def make_scripted_agent(name: str, game: str | None = None, protocol: str | None = None) -> PongTracker:
    """The scripted agent ``name`` (see :data:`SCRIPTED`); ``ValueError`` for an unknown name, another
    game, or a protocol whose frames it cannot read."""
    choose("scripted agent", name, SCRIPTED)
    own_game, cls = SCRIPTED[name]
    if game is not None:
        from xrlkit.games import resolve_game

        if resolve_game(game) != own_game:
            raise ValueError(f"{name} plays {own_game}, not {resolve_game(game)}")
    if protocol not in (None, "rlzoo", "ifepaper"):
        raise ValueError(f"{name} reads full-screen frames (rlzoo / ifepaper protocols), not {protocol!r}")
    return cls()
