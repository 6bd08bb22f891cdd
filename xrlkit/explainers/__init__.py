"""Saliency explainers for Atari agents, all behind one protocol (see :mod:`xrlkit.explainers.base`).

``explainer.explain(states [B, 4, 84, 84], actions [B]) -> float [B, 84, 84] >= 0``.
Build one by name with :func:`make_explainer`; :data:`EXPLAINERS` lists the names:

=============  ==============================================================================
``grad``       vanilla gradient (captum ``Saliency``)
``ig``         Integrated Gradients from a black baseline (captum)
``gradcam``    Grad-CAM on the agent's last conv layer (captum ``LayerGradCam``)
``occlusion``  sliding-window occlusion with a reference (captum ``Occlusion``)
``greydanus``  Gaussian-blur perturbation saliency of Greydanus et al. (2018)
``sarfa``      SARFA (Puri et al. 2020): Greydanus' perturbation, scored for the action only
``lime``       LIME (Ribeiro et al. 2016) on a grid of superpixels
``rise``       RISE random masks (Petsiuk et al. 2018)
``random``     uniform random maps (sanity floor)
``ife``        the IFE encoder's own attention (action-independent)
``visionmask`` the mask of a VisionMask model, ``make_explainer("visionmask", agent, model=...)``
=============  ==============================================================================
"""

from __future__ import annotations

from typing import Any

from xrlkit.agents.base import Agent
from xrlkit.explainers.adapters import AttentionExplainer, VisionMaskExplainer
from xrlkit.explainers.base import Explainer, last_conv_layer, prepare_inputs, reduce_frames
from xrlkit.explainers.captum_based import (
    GradCAMExplainer,
    GradientExplainer,
    IntegratedGradientsExplainer,
    OcclusionExplainer,
)
from xrlkit.explainers.perturbation import GreydanusExplainer, RandomExplainer, RISEExplainer, SARFAExplainer
from xrlkit.explainers.surrogate import LIMEExplainer
from xrlkit.registry import choose

_CLASSES: dict[str, Any] = {
    "grad": GradientExplainer,
    "ig": IntegratedGradientsExplainer,
    "gradcam": GradCAMExplainer,
    "occlusion": OcclusionExplainer,
    "greydanus": GreydanusExplainer,
    "sarfa": SARFAExplainer,
    "lime": LIMEExplainer,
    "rise": RISEExplainer,
    "random": RandomExplainer,
    "ife": AttentionExplainer,
    "visionmask": VisionMaskExplainer,
}
#: names accepted by :func:`make_explainer`
EXPLAINERS: tuple[str, ...] = tuple(_CLASSES)


def make_explainer(name: str, agent: Agent, **kwargs: Any) -> Explainer:
    """Build explainer ``name`` for ``agent``; ``kwargs`` go to its constructor (e.g.
    ``n_steps`` for ``ig``, ``patch``/``stride`` for ``occlusion``, ``seed`` for ``rise``/``lime``/``random``).
    ``visionmask`` explains a VisionMask model, passed as ``model=``; the agent is not used."""
    choose("explainer", name, _CLASSES)
    if name == "visionmask":
        if "model" not in kwargs:
            raise ValueError("the 'visionmask' explainer needs model=<trained VisionMask model>")
        return VisionMaskExplainer(**kwargs)
    return _CLASSES[name](agent, **kwargs)


__all__ = [
    "EXPLAINERS", "Explainer", "make_explainer", "prepare_inputs", "reduce_frames", "last_conv_layer",
    "GradientExplainer", "IntegratedGradientsExplainer", "GradCAMExplainer", "OcclusionExplainer",
    "GreydanusExplainer", "SARFAExplainer", "LIMEExplainer", "RISEExplainer", "RandomExplainer", "AttentionExplainer", "VisionMaskExplainer",
]
