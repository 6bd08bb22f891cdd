"""Image encoders for stacked Atari frames: Nature CNN, the Nature CNN with soft attention,
S3TA's multi-head query attention on a feed-forward agent, IMPALA-CNN and IFE.

Every encoder takes ``float [B, C, 84, 84]`` in [0, 1] (``C`` stacked gray frames) and returns
``float [B, out_features]``. They are built by name through :func:`make_encoder`.

The IMPALA-CNN and IFE follow the "Fast Rainbow" code the IFE paper builds on
(arXiv 2504.10071; schmidtdominik/Rainbow): IMPALA-large with a channel multiplier of 2,
spectral normalisation in the residual blocks and an 8x8 adaptive max-pool before the head.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xrlkit.registry import choose
from xrlkit.shapes import FRAME_SHAPE

NormFn = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    return module


def _nature_convs(in_channels: int) -> list[nn.Module]:
    """The three convolutions of the Nature CNN with their ReLUs: ``[B, C, 84, 84] -> [B, 64, 7, 7]``."""
    return [
        nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
    ]


class NatureCNN(nn.Module):
    """The DQN encoder of Mnih et al. (2015): three convolutions, 3136 features for 84x84 input."""

    def __init__(self, in_channels: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(*_nature_convs(in_channels), nn.Flatten())
        self.out_features = 64 * 7 * 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block of the IMPALA-CNN: x + conv(relu(conv(relu(x))))."""

    def __init__(self, channels: int, norm: NormFn = _identity) -> None:
        super().__init__()
        self.conv0 = norm(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv1 = norm(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


def _residual_tail(channels: int, spectral_norm: bool) -> nn.Sequential:
    """Max-pool(3, 2, 1) followed by two residual blocks (spectral-normed when asked)."""
    norm: NormFn = nn.utils.spectral_norm if spectral_norm else _identity
    return nn.Sequential(
        nn.MaxPool2d(3, stride=2, padding=1),
        ResidualBlock(channels, norm),
        ResidualBlock(channels, norm),
    )


class ImpalaCNN(nn.Module):
    """IMPALA-CNN (Espeholt et al. 2018), large variant, as used by Fast Rainbow.

    Three stages of conv3x3 -> max-pool -> 2 residual blocks with ``channels`` per stage,
    then ReLU and an adaptive max-pool to ``pool x pool``.
    """

    def __init__(
        self,
        in_channels: int = 4,
        channels: tuple[int, ...] = (32, 64, 64),
        spectral_norm: bool = True,
        pool: int = 8,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            stages += [nn.Conv2d(prev, ch, 3, padding=1), *_residual_tail(ch, spectral_norm)]
            prev = ch
        self.net = nn.Sequential(*stages, nn.ReLU(), nn.AdaptiveMaxPool2d(pool), nn.Flatten())
        self.out_features = prev * pool * pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SoftAttention(nn.Module):
    """Soft spatial attention: an MLP scores each position of a feature map, softmax over positions.

    Input ``[B, D, H, W]``; returns the features weighted by their attention times ``H*W``
    ``[B, D, H, W]`` (uniform attention gives the features back at their own scale) and the
    attention ``[B, H, W]``, which sums to 1 over the H*W positions. Without the ``H*W`` the
    weighted features shrink ~200-fold in IFE, whose spectral-normed AFE cannot restore the scale:
    the first Linear layer must then grow as much, and a distilled IFE student's loss fell from
    1.79 to only 1.72 in 200 updates, against 1.52 with the rescaling (Pong, measured here). The MLP is ``Linear(D, hidden) -> ReLU -> Linear(hidden, 1)``
    per position, computed as 1x1 convolutions on the map (the same weights: no transpose to
    ``[B, H*W, D]``, and ~20% faster in a bf16 channels_last update on this project's CPU).
    """

    def __init__(self, features: int, hidden: int = 512) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, last = self.score[0], self.score[2]
        # in place: the hidden map is [B, hidden, H, W], IFE's largest activation; not allocating a second one
        # made a bf16 IFE update 11% faster with glibc malloc, 3.5% with tcmalloc (2 threads, Zen 5)
        h = F.relu(F.conv2d(x, first.weight[:, :, None, None], first.bias), inplace=True)
        scores = F.conv2d(h, last.weight[:, :, None, None], last.bias)
        b, _, height, width = scores.shape
        alpha = torch.softmax(scores.reshape(b, -1).float(), dim=1)
        weights = (alpha * (height * width)).to(x.dtype).view(b, 1, height, width)
        return x * weights, alpha.view(b, height, width)


class NatureAttentionCNN(nn.Module):
    """The "CNN with attention" baseline of the IFE paper's comparison: the Nature CNN with one
    soft spatial attention (:class:`SoftAttention`) over its last feature map, the attention
    family of Sorokin et al. (2015) and Manchin et al. (2019).

    Shapes: ``[B, C, 84, 84] -> [B, 3136]`` (as :class:`NatureCNN`); :attr:`attention` holds the
    last attention ``[B, 7, 7]``, summing to 1. Each of the 7x7 cells sees a 36x36-px window
    of the input (stride 8), against IFE's 14x14 cells of 6x6 px each: the coarseness the IFE
    paper attributes to attention on top of a deep CNN. With uniform attention the attended map
    is the plain Nature features (:class:`SoftAttention` rescales by the 49 cells), then flattened.
    """

    def __init__(self, in_channels: int = 4, attention_hidden: int = 512) -> None:
        super().__init__()
        self.convs = nn.Sequential(*_nature_convs(in_channels))
        self.attend = SoftAttention(64, attention_hidden)
        self.attention: torch.Tensor | None = None
        self.out_features = 64 * 7 * 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weighted, self.attention = self.attend(self.convs(x))
        return weighted.flatten(1)


class HumanUnderstandableEncoding(nn.Module):
    """HUE: non-overlapping convolutions (k3 s3, k2 s2, k1) keep a 14x14 grid whose cells map to
    6x6-pixel patches of the 84x84 input, then one soft attention over the 196 cells.

    Shapes: ``[B, C, 84, 84] -> [B, 2*width, 14, 14]``; the last attention is kept in
    :attr:`attention` as ``[B, 14, 14]``.
    """

    def __init__(self, in_channels: int = 4, width: int = 32, attention_hidden: int = 512) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=3), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 2, stride=2), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 1), nn.ReLU(),
        )
        # As in the IFE code: ReLU-gain scaled conv weights, zero biases.
        gain = nn.init.calculate_gain("relu")
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                with torch.no_grad():
                    m.weight.mul_(gain)
                    m.bias.zero_()
        self.attend = SoftAttention(2 * width, attention_hidden)
        self.attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weighted, self.attention = self.attend(self.convs(x))
        return weighted


class IFE(nn.Module):
    """Interpretable Feature Extractor (arXiv 2504.10071): HUE followed by the AFE.

    AFE = max-pool(3, 2, 1) + two spectral-normed IMPALA residual blocks + ReLU + adaptive
    max-pool to 8x8. With ``width=32`` the output has 64*8*8 = 4096 features.
    After each forward, :attr:`attention` holds the HUE attention ``[B, 14, 14]`` (sums to 1).
    """

    def __init__(self, in_channels: int = 4, width: int = 32, spectral_norm: bool = True, pool: int = 8) -> None:
        super().__init__()
        self.hue = HumanUnderstandableEncoding(in_channels, width)
        self.afe = nn.Sequential(
            *_residual_tail(2 * width, spectral_norm), nn.ReLU(), nn.AdaptiveMaxPool2d(pool), nn.Flatten()
        )
        self.out_features = 2 * width * pool * pool

    @property
    def attention(self) -> torch.Tensor | None:
        return self.hue.attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.afe(self.hue(x))


def spatial_basis(height: int, width: int, size: int = 8) -> torch.Tensor:
    """S3TA's fixed spatial basis: ``cos(pi u i / H) cos(pi v j / W)`` for ``u, v < size``, as
    ``[size*size, H, W]`` channels appended to keys and values (where an answer came from)."""
    u = torch.cos(torch.pi * torch.arange(size)[:, None] * torch.arange(height)[None, :] / height)  # [size, H]
    v = torch.cos(torch.pi * torch.arange(size)[:, None] * torch.arange(width)[None, :] / width)  # [size, W]
    return (u[:, None, :, None] * v[None, :, None, :]).reshape(size * size, height, width)


class S3TAFeedForward(nn.Module):
    """The attention read-out of S3TA (Mott et al. 2019, "Towards interpretable reinforcement
    learning using attention augmented agents") on a feed-forward agent.

    A conv core ``[B, C, 84, 84] -> [B, 64, 10, 10]`` (Nature's first two convolutions, padded,
    then a 3x3) gives keys ``[B, keys, 10, 10]`` and values ``[B, values, 10, 10]`` (1x1 convs),
    each with the fixed :func:`spatial_basis` appended. ``heads`` queries attend over the 100
    cells (softmax of query . key); each head's answer is its attention-weighted sum of the values.
    The output is the answers and the queries, flattened:
    ``heads * (values + basis^2) + heads * (keys + basis^2)`` features (800 by default).

    What differs from the paper, and why: S3TA is recurrent. Its vision core is a ConvLSTM and its
    queries come, top-down, from the previous state of a policy LSTM; xrlkit's agents are
    feed-forward over 4 stacked frames (the PPO and Rainbow loops carry no recurrent state), so
    here the frame stack replaces the ConvLSTM and the queries come from the core's
    global-max-pooled features through an MLP. The sizes are the paper's (4 heads, 8-channel keys,
    an 8x8 cosine basis); its 120-channel values are 64 here, the core's width.

    After each forward :attr:`attention` holds the mean of the heads' maps ``[B, 10, 10]`` (sums
    to 1) and :attr:`head_attention` each head's ``[B, heads, 10, 10]``.
    """

    def __init__(self, in_channels: int = 4, heads: int = 4, keys: int = 8, values: int = 64, basis: int = 8) -> None:
        super().__init__()
        self.core = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),  # 84 -> 20
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # 20 -> 10
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        )
        self.to_keys, self.to_values = nn.Conv2d(64, keys, 1), nn.Conv2d(64, values, 1)
        self.register_buffer("basis", spatial_basis(10, 10, basis), persistent=False)
        self.heads, self.key_size = heads, keys + basis * basis
        self.query = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, heads * self.key_size))
        self.attention: torch.Tensor | None = None
        self.head_attention: torch.Tensor | None = None
        self.out_features = heads * (values + basis * basis) + heads * self.key_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.core(x)
        b, _, h, w = o.shape
        basis = self.basis.to(o.dtype).expand(b, -1, -1, -1)
        k = torch.cat([self.to_keys(o), basis], 1).flatten(2)  # [B, key_size, H*W]
        v = torch.cat([self.to_values(o), basis], 1).flatten(2)  # [B, value_size, H*W]
        q = self.query(o.amax(dim=(2, 3))).view(b, self.heads, self.key_size)  # [B, heads, key_size]
        alpha = torch.softmax(torch.bmm(q, k).float(), dim=2)  # [B, heads, H*W]
        answers = torch.bmm(alpha.to(v.dtype), v.transpose(1, 2))  # [B, heads, value_size]
        self.head_attention = alpha.view(b, self.heads, h, w)
        self.attention = self.head_attention.mean(1)
        return torch.cat([answers.flatten(1), q.flatten(1)], 1)


def upsample_attention(attention: torch.Tensor, size: tuple[int, int] = FRAME_SHAPE, mode: str = "nearest") -> torch.Tensor:
    """Upsample attention maps ``[B, h, w]`` (each summing to 1) to ``[B, *size]``, rescaled to
    keep summing to 1. With ``mode="nearest"`` each HUE cell shows exactly its input patch."""
    up = F.interpolate(attention.unsqueeze(1), size=size, mode=mode).squeeze(1)
    return up / up.sum(dim=(1, 2), keepdim=True)


ENCODERS: dict[str, type[nn.Module]] = {
    "nature": NatureCNN, "nature-attention": NatureAttentionCNN, "s3ta-ff": S3TAFeedForward, "impala": ImpalaCNN,
    "ife": IFE,
}


def make_encoder(name: str, in_channels: int = 4, **kwargs: object) -> nn.Module:
    """Build an encoder by name (a key of :data:`ENCODERS`); kwargs go to its constructor."""
    choose("encoder", name, ENCODERS)
    return ENCODERS[name](in_channels=in_channels, **kwargs)
