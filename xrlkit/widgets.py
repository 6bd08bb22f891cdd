"""An interactive explorer of one recorded episode, for teaching: scrub through the states, pick an
explainer and an action, and see the saliency over the screen, the agent's action probabilities
and what the agent does once the salient region is removed.

All the logic is in :meth:`Explorer.view` (a plain function of the choices, returning a figure
and the numbers it shows), so it is tested without a browser; :meth:`Explorer.widget` only wires
ipywidgets controls to it. Under papermill / nbval, where nothing is interactive, a notebook
shows :meth:`Explorer.view` for a fixed choice instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from xrlkit import plotting
from xrlkit.agents.base import Agent
from xrlkit.evaluation import Rollout
from xrlkit.explainers.base import Explainer
from xrlkit.metrics import top_pixels
from xrlkit.references import make_reference
from xrlkit.registry import choose
from xrlkit.shapes import FRAME_SHAPE


@dataclass
class View:
    """What one view shows: the state's index, the explainer, the explained action, the
    saliency ``[84, 84]``, the action probabilities before and after removing the most salient
    ``removed_share`` of the pixels, and the action the agent then prefers."""

    index: int
    explainer: str
    action: int
    saliency: np.ndarray
    probs: np.ndarray
    probs_removed: np.ndarray
    action_removed: int
    removed_share: float


class Explorer:
    """Explore ``rollout`` (states and raw frames of the agent's own play) with ``explainers``.

    The counterfactual replaces the ``removed_share`` most salient pixels of all 4 frames by the
    reference (:func:`xrlkit.references.make_reference`, black by default) and asks the agent
    again. Views are cached, so scrubbing back is instant.
    """

    def __init__(self, agent: Agent, rollout: Rollout, explainers: Mapping[str, Explainer],
                 removed_share: float = 0.05, reference: str = "black") -> None:
        if not explainers:
            raise ValueError("need at least one explainer")
        if not 0 < removed_share < 1:
            raise ValueError(f"removed_share must lie in (0, 1), got {removed_share}")
        if len(rollout.states) == 0 or len(rollout.frames) != len(rollout.states):
            raise ValueError("the rollout needs states and one raw frame per state")
        self.agent, self.rollout, self.explainers = agent, rollout, dict(explainers)
        self.removed_share, self.reference = removed_share, reference
        self._cache: dict[tuple[int, str, int], View] = {}

    @property
    def meanings(self) -> tuple[str, ...]:
        return tuple(self.agent.action_meanings)

    @torch.no_grad()
    def _probs(self, x: torch.Tensor) -> np.ndarray:
        return self.agent.logits(x).float().softmax(dim=1)[0].cpu().numpy()

    def compute(self, index: int, explainer: str, action: int | None = None) -> View:
        """The numbers of one view; ``action=None`` explains the agent's preferred action."""
        if not 0 <= index < len(self.rollout.states):
            raise ValueError(f"state index {index} outside [0, {len(self.rollout.states)})")
        choose("explainer", explainer, self.explainers)
        x = torch.as_tensor(self.rollout.states[index : index + 1], device=self.agent.device).float()
        probs = self._probs(x)
        action = int(probs.argmax()) if action is None else int(action)
        if not 0 <= action < self.agent.n_actions:
            raise ValueError(f"action {action} outside [0, {self.agent.n_actions})")
        key = (index, explainer, action)
        if key not in self._cache:
            sal = self.explainers[explainer].explain(x, torch.tensor([action], device=x.device))[0]
            m = top_pixels(sal[None], self.removed_share).view(1, 1, *FRAME_SHAPE).float()
            removed = self._probs((1 - m) * x + m * make_reference(x, self.reference))
            self._cache[key] = View(index, explainer, action, sal.detach().cpu().numpy(), probs, removed,
                                    int(removed.argmax()), self.removed_share)
        return self._cache[key]

    def view(self, index: int, explainer: str, action: int | None = None) -> tuple[Figure, View]:
        """The figure of one view (screen with the saliency over it; action probabilities before
        and after the removal) and its numbers."""
        v = self.compute(index, explainer, action)
        names = self.meanings
        fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
        plotting.overlay(left, self.rollout.frames[index], v.saliency,
                         title=f"state {index}: {explainer} for {names[v.action]}")
        x = np.arange(len(names))
        right.bar(x - 0.2, v.probs, 0.4, color="black", label="this state")
        right.bar(x + 0.2, v.probs_removed, 0.4, color="tab:red",
                  label=f"top {v.removed_share:.0%} salient pixels removed")
        right.set_xticks(x, names, rotation=30, fontsize=8)
        right.set_ylim(0, 1)
        right.set_ylabel("P(action)")
        chosen, after = names[int(v.probs.argmax())], names[v.action_removed]
        right.set_title(f"agent picks {chosen}; without the region: {after}", fontsize=9)
        right.legend(fontsize=7)
        fig.tight_layout()
        return fig, v

    def widget(self) -> Any:
        """ipywidgets controls (state slider, explainer and action drop-downs) above the view."""
        import ipywidgets as w
        from IPython.display import display

        slider = w.IntSlider(0, 0, len(self.rollout.states) - 1, description="state")
        which = w.Dropdown(options=list(self.explainers), description="explainer")
        action = w.Dropdown(options=[("the agent's choice", -1)] + [(n, i) for i, n in enumerate(self.meanings)],
                            value=-1, description="action")
        out = w.Output()

        def redraw(_: Any = None) -> None:
            out.clear_output(wait=True)
            with out:
                fig, _ = self.view(slider.value, which.value, None if action.value < 0 else action.value)
                display(fig)
                plt.close(fig)

        for control in (slider, which, action):
            control.observe(redraw, names="value")
        redraw()
        box = w.VBox([w.HBox([slider, which, action]), out])
        box.controls = {"state": slider, "explainer": which, "action": action}  # for tests and scripting
        return box
