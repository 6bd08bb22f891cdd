"""Gradient and occlusion explainers built on captum.

All four reduce input attributions over the 4 stacked frames with
:func:`~xrlkit.explainers.base.reduce_frames` (sum of ``|attr|``), except Grad-CAM, whose map
lives on the conv layer's grid: it is ReLU'd (captum's ``relu_attributions``) and bilinearly
upsampled to 84x84.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from torch import nn

from xrlkit.agents.base import Agent
from xrlkit.explainers.base import last_conv_layer, logits_fn, prepare_inputs, reduce_frames
from xrlkit.references import make_reference
from xrlkit.shapes import FRAME_SHAPE


class GradientExplainer:
    """Vanilla gradient (Simonyan et al. 2014): ``sum_f |d logit_a / d s_f|`` (captum ``Saliency``)."""

    name = "grad"

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._method = Saliency(logits_fn(agent))

    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        return reduce_frames(self._method.attribute(x.requires_grad_(), target=a, abs=True))


class IntegratedGradientsExplainer:
    """Integrated Gradients (Sundararajan et al. 2017) from a black (all-zero) baseline, captum
    ``IntegratedGradients`` with ``n_steps`` Gauss-Legendre points, evaluated ``internal_batch_size``
    interpolated states at a time."""

    name = "ig"

    def __init__(self, agent: Agent, n_steps: int = 32, internal_batch_size: int = 64) -> None:
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.agent, self.n_steps, self.internal_batch_size = agent, n_steps, internal_batch_size
        self._method = IntegratedGradients(logits_fn(agent))

    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        attr = self._method.attribute(
            x, baselines=torch.zeros_like(x), target=a, n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
        )
        return reduce_frames(attr)


class GradCAMExplainer:
    """Grad-CAM (Selvaraju et al. 2017), captum ``LayerGradCam`` on ``layer`` (default: the last
    ``nn.Conv2d`` the logits are computed through, see
    :func:`~xrlkit.explainers.base.last_conv_layer`), ReLU'd and bilinearly upsampled to 84x84.
    Frames are mixed by the first conv already, so no frame rule."""

    name = "gradcam"

    def __init__(self, agent: Agent, layer: nn.Module | None = None) -> None:
        self.agent = agent
        self.layer = layer if layer is not None else last_conv_layer(agent)
        self._method = LayerGradCam(logits_fn(agent), self.layer)

    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        cam = self._method.attribute(x.requires_grad_(), target=a, relu_attributions=True)
        up = LayerAttribution.interpolate(cam, FRAME_SHAPE, interpolate_mode="bilinear")
        return up.detach().squeeze(1).clamp_min(0).float()


class OcclusionExplainer:
    """Occlusion (Zeiler & Fergus 2014), captum ``Occlusion``: a ``patch x patch`` window over all
    4 frames at once, moved by ``stride`` px, replaced by the reference
    (:func:`xrlkit.references.make_reference`, mode ``reference``); a pixel's attribution is the
    mean drop of the action's logit over the windows covering it. ``perturbations_per_eval``
    occluded copies are scored per forward pass."""

    name = "occlusion"

    def __init__(
        self, agent: Agent, patch: int = 8, stride: int = 4, reference: str = "black",
        background: torch.Tensor | None = None, perturbations_per_eval: int = 64,
    ) -> None:
        if not 1 <= stride <= patch <= FRAME_SHAPE[0]:
            raise ValueError(f"need 1 <= stride <= patch <= 84, got patch={patch}, stride={stride}")
        self.agent, self.patch, self.stride = agent, patch, stride
        self.reference, self.background = reference, background
        self.perturbations_per_eval = perturbations_per_eval
        self._method = Occlusion(logits_fn(agent))

    @torch.no_grad()
    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        ref = make_reference(x, self.reference, self.background)
        attr = self._method.attribute(
            x, sliding_window_shapes=(4, self.patch, self.patch), strides=(4, self.stride, self.stride),
            baselines=ref, target=a, perturbations_per_eval=self.perturbations_per_eval,
        )
        return reduce_frames(attr)
