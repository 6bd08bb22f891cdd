"""The VisionMask explainer network: one sigmoid mask per action.

Input layout. A state is four stacked 84x84 gray frames ``[B, 4, 84, 84]`` in [0, 255]. The
explainer sees exactly that: the four frames are the four input channels (the first conv of the
torchvision backbone is replaced by a 4-channel one), scaled to [0, 1] and normalised with the
ImageNet gray statistics (mean 0.449, std 0.226, the average of the RGB ones). With ImageNet
backbone weights the new first conv is initialised from the RGB filters averaged over colour and
repeated for each frame, scaled by 3/4 so a constant image gives the same activation as before.
The official code instead tiles the frames side by side into one wide RGB image and so gets a
separate mask per frame; here one mask per action covers all four frames (``[B, K, 84, 84]``),
which is what the rest of xrlkit (attribution maps at 84x84) expects.

Output: the segmentation head has ``K = n_actions`` channels; torchvision's DeepLabv3 upsamples
its logits bilinearly to the input size and a sigmoid gives masks in [0, 1].

Backbones: ``resnet50`` (``deeplabv3_resnet50``, as in the paper) or ``mobilenet``
(``deeplabv3_mobilenet_v3_large``, much faster on CPU). Backbone weights are ``"none"`` (random
init, as the official code) or ``"imagenet"``, which is only read from the local torch hub cache:
nothing is downloaded, and a missing file is a clear error. ``head_channels`` sets the width of
the ASPP head (256 as torchvision; the shipped explainers use 64 to fit the size budget).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xrlkit.checkpoint import load_tensors, save_tensors
from xrlkit.games import resolve_game
from xrlkit.references import REFERENCE_MODES, make_reference
from xrlkit.registry import choose
from xrlkit.runtime import inference_copy
from xrlkit.shapes import OBS_SHAPE

BACKBONES = ("mobilenet", "resnet50")
BACKBONE_WEIGHTS = ("none", "imagenet")
GRAY_MEAN, GRAY_STD = 0.449, 0.226
META_KIND = "visionmask"


def _imagenet_backbone_weights(backbone: str) -> Any:
    """The torchvision ImageNet weights enum of ``backbone``, if its file is in the hub cache.

    Raises ``FileNotFoundError`` naming the expected path otherwise (nothing is downloaded).
    """
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if backbone == "mobilenet" else ResNet50_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for the {backbone} backbone are not in the torch hub cache ({cached}); "
            "this machine cannot download them. Copy the file there or use backbone weights 'none'."
        )
    return weights


def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
    """Replace the first 3-channel ``Conv2d`` of ``net`` by one with ``in_channels`` inputs,
    initialised from the mean of the RGB filters (scaled by ``3 / in_channels``)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(
                in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups, module.bias is not None,
            )
            with torch.no_grad():
                mean = module.weight.mean(dim=1, keepdim=True)
                new.weight.copy_(mean.expand(-1, in_channels, -1, -1) * (3.0 / in_channels))
                if module.bias is not None:
                    new.bias.copy_(module.bias)  # type: ignore[union-attr]
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, new)
            return
    raise RuntimeError("backbone has no 3-channel input convolution to adapt")


def build_segmenter(backbone: str, n_outputs: int, weights: str = "none", head_channels: int = 256) -> nn.Module:
    """A torchvision DeepLabv3 with ``n_outputs`` channels and a 4-channel first conv.

    ``head_channels`` is the width of the ASPP head (torchvision's 256 by default). The head is
    most of a MobileNet DeepLabv3 (8M of its 11M parameters at 256); a narrower one keeps the
    shipped explainers within the repository's size budget. torchvision's ``DeepLabHead`` has
    no width argument, so a narrower head is assembled here from its ``ASPP`` block in the same
    layout (ASPP, 3x3 conv, batch norm, ReLU, 1x1 classifier).
    """
    from torchvision.models import segmentation
    from torchvision.models.segmentation.deeplabv3 import ASPP

    choose("backbone", backbone, BACKBONES)
    choose("backbone weights", weights, BACKBONE_WEIGHTS)
    if head_channels < 1:
        raise ValueError(f"head_channels must be >= 1, got {head_channels}")
    wb = _imagenet_backbone_weights(backbone) if weights == "imagenet" else None
    factory = segmentation.deeplabv3_mobilenet_v3_large if backbone == "mobilenet" else segmentation.deeplabv3_resnet50
    net = factory(weights=None, weights_backbone=wb, num_classes=n_outputs, aux_loss=False)
    if head_channels != 256:
        aspp = net.classifier[0]
        in_channels = aspp.convs[0][0].in_channels
        rates = [conv[0].dilation[0] for conv in aspp.convs[1:-1]]
        net.classifier = nn.Sequential(
            ASPP(in_channels, rates, head_channels),
            nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(),
            nn.Conv2d(head_channels, n_outputs, 1),
        )
    _replace_first_conv(net, 4)
    return net


class VisionMask(nn.Module):
    """Per-action mask explainer for an agent with ``n_actions`` actions.

    ``forward(states [B, 4, 84, 84] in [0, 255]) -> masks float [B, K, 84, 84] in [0, 1]``,
    differentiable. :meth:`explain` is the no-grad, eval-mode version used to explain states.

    The reference (``reference_mode``, one of :data:`xrlkit.references.REFERENCE_MODES`, plus a
    background image ``[4, 84, 84]`` for mode ``background``) is part of the model because the
    masks were trained for it; :meth:`reference` builds it for a batch.
    """

    name = "visionmask"

    def __init__(
        self,
        n_actions: int,
        backbone: str = "mobilenet",
        backbone_weights: str = "none",
        reference_mode: str = "black",
        background: torch.Tensor | None = None,
        action_meanings: tuple[str, ...] | None = None,
        game: str | None = None,
        agent_id: dict[str, Any] | None = None,
        head_channels: int = 256,
    ) -> None:
        super().__init__()
        if n_actions < 2:
            raise ValueError(f"VisionMask needs an agent with >= 2 actions, got {n_actions}")
        choose("reference mode", reference_mode, REFERENCE_MODES)
        if reference_mode == "background" and background is None:
            raise ValueError("reference mode 'background' needs a background image [4, 84, 84]")
        self.n_actions = n_actions
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.head_channels = head_channels
        self.reference_mode = reference_mode
        self.action_meanings = tuple(action_meanings) if action_meanings else tuple(f"ACTION_{i}" for i in range(n_actions))
        if len(self.action_meanings) != n_actions:
            raise ValueError(f"{len(self.action_meanings)} action meanings for {n_actions} actions")
        self.game = resolve_game(game) if game else None
        self.agent_id = dict(agent_id or {})
        self.net = build_segmenter(backbone, n_actions, backbone_weights, head_channels)
        self._inference: tuple[Any, nn.Module] | None = None
        if background is not None:
            bg = torch.as_tensor(background, dtype=torch.float32)
            if tuple(bg.shape) != OBS_SHAPE:
                raise ValueError(f"background must have shape [4, 84, 84], got {tuple(bg.shape)}")
            self.register_buffer("background", bg.clone())
        else:
            self.background = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _input(self, states: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``states [B, 4, 84, 84]`` in [0, 255] as the network's normalised float input."""
        t = torch.as_tensor(states, device=self.device)
        if t.ndim != 4 or tuple(t.shape[1:]) != OBS_SHAPE:
            raise ValueError(f"expected states [B, 4, 84, 84], got shape {tuple(t.shape)}")
        return (t.float() / 255.0 - GRAY_MEAN) / GRAY_STD

    def forward(self, states: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Masks ``float [B, K, 84, 84]`` in [0, 1] for ``states [B, 4, 84, 84]`` in [0, 255]."""
        return torch.sigmoid(self.net(self._input(states))["out"])

    @torch.no_grad()
    def explain(self, states: np.ndarray | torch.Tensor, actions: Any = None) -> torch.Tensor:
        """All K masks ``float [B, K, 84, 84]`` in [0, 1]: :meth:`forward` in eval mode, without
        gradients, computed by :func:`xrlkit.runtime.inference_copy` of the network (batch norms
        folded, channels_last on a CPU; the same masks up to float rounding, in half the time).

        ``actions`` is accepted for interface symmetry with other explainers and ignored: the
        masks of every action are returned; index ``masks[b, actions[b]]`` for the chosen one.
        """
        return torch.sigmoid(self._inference_net()(self._input(states))["out"])

    def _inference_net(self) -> nn.Module:
        """The inference copy of ``self.net``, rebuilt whenever a weight or buffer has changed
        since it was made: an in-place change (an optimizer step, ``load_state_dict``) bumps a
        tensor's version counter (``Tensor._version``, what autograd checks for the same reason),
        and a move, a cast or a ``.data`` swap changes its storage."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        key = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
        # a tuple, not a module attribute, so the copy stays out of state_dict() and parameters()
        if self._inference is None or self._inference[0] != key:
            self._inference = (key, inference_copy(self.net, self.device))
        return self._inference[1]

    def reference(self, states: torch.Tensor) -> torch.Tensor:
        """The reference ``r`` for ``states [B, 4, 84, 84]`` (float, [0, 255]) in this model's mode."""
        return make_reference(states.float(), self.reference_mode, self.background)

    def check_agent(self, agent: Any) -> None:
        """Raise ``ValueError`` unless ``agent`` has this model's number of actions."""
        if int(agent.n_actions) != self.n_actions:
            raise ValueError(
                f"VisionMask has {self.n_actions} masks but the agent has {agent.n_actions} actions; "
                "a VisionMask model only explains agents with the action set it was trained for"
            )

    def meta(self) -> dict[str, Any]:
        """Checkpoint metadata (JSON-serialisable)."""
        return {
            "kind": META_KIND, "n_actions": self.n_actions, "action_meanings": list(self.action_meanings),
            "game": self.game, "backbone": self.backbone, "backbone_weights": self.backbone_weights,
            "head_channels": self.head_channels,
            "reference_mode": self.reference_mode, "has_background": self.background is not None,
            "agent": self.agent_id,
        }

    def save(self, path: str | Path, **extra: Any) -> Path:
        """Write weights (and the background, if any) and :meth:`meta` plus ``extra`` to ``path``."""
        return save_tensors(path, self.state_dict(), {**self.meta(), **extra})


def load_visionmask(path: str | Path, agent: Any = None, device: str | torch.device = "cpu") -> VisionMask:
    """Load a :class:`VisionMask` checkpoint in eval mode on ``device``.

    If ``agent`` is given, its number of actions must equal the model's (``ValueError`` otherwise).
    """
    tensors, meta = load_tensors(path, "cpu")
    if meta.get("kind") != META_KIND:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} model, not a VisionMask explainer")
    model = VisionMask(
        meta["n_actions"], meta["backbone"], "none", meta["reference_mode"],
        background=tensors.get("background"), action_meanings=tuple(meta["action_meanings"]),
        game=meta.get("game"), agent_id=meta.get("agent"), head_channels=int(meta.get("head_channels", 256)),
    )
    model.backbone_weights = meta.get("backbone_weights", "none")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored configuration ({err})") from err
    model.checkpoint_meta = meta  # type: ignore[attr-defined]
    if agent is not None:
        model.check_agent(agent)
    return model.to(device).eval()
