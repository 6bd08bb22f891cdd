"""Stable-Baselines3 agents in xrlkit: load, wrap, train.

* :class:`SB3Agent` puts any SB3 Atari policy behind the :class:`~xrlkit.agents.base.Agent`
  protocol: PPO / A2C (policy logits), DQN (Q-values), QR-DQN (mean of the quantiles) and
  RecurrentPPO (sb3-contrib). Logits are computed from the policy's own modules (never through
  ``predict``), so they stay differentiable w.r.t. float input.
* :func:`load_sb3_agent` / :func:`load_from_hub` load SB3 ``.zip`` files (RL-Zoo format).
* :class:`XrlkitExtractor` makes xrlkit's encoders (Nature, IMPALA, IFE) usable as SB3 feature
  extractors, so PPO-IFE and RecurrentPPO-IFE can be trained; :meth:`SB3Agent.attention` then
  gives the IFE attention map.
* :func:`train_sb3` trains with RL-Zoo's Atari hyperparameters and stores xrlkit metadata.

Observations. xrlkit states are ``[B, 4, 84, 84]`` in [0, 255], oldest frame first. RL-Zoo
agents see ``VecFrameStack`` output ``[B, 84, 84, 4]`` (same frame order, channels last),
which SB3 transposes to channels first before the policy; :func:`sb3_to_xrlkit_obs` converts
one layout to the other and :class:`SB3Agent` feeds whatever layout the policy was built for.
Scaling to [0, 1] is left to SB3's own preprocessing (``normalize_images``).

Metadata. A model written by :func:`train_sb3` (or :func:`write_xrlkit_meta`) carries an extra
``xrlkit.json`` entry inside its zip (SB3 ignores unknown entries): ``game``, ``algo``,
``encoder``, ``protocol``, ``steps``, ``n_actions``, ``action_meanings``, ``command``, library
versions. :func:`load_sb3_agent` checks it against the requested game.

RecurrentPPO is a *synchronous* PPO with an LSTM policy (sb3-contrib), not the asynchronous
A3C-LSTM of the IFE paper; results from it are a stand-in, not a reproduction.
"""

from __future__ import annotations

import csv
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import QRDQN, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack
from torch import nn
from tqdm.auto import tqdm

from xrlkit.agents.base import ActMode, as_obs_tensor, choose_actions
from xrlkit.agents.encoders import ENCODERS, make_encoder, upsample_attention
from xrlkit.envs import action_meanings, get_protocol, make_env
from xrlkit.shapes import FRAME_SHAPE, OBS_SHAPE
from xrlkit.evaluation import evaluate
from xrlkit.games import resolve_game
from xrlkit.registry import choose
from xrlkit.runlog import curve_path

#: algorithm name -> SB3 class
ALGOS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO, "a2c": A2C, "dqn": DQN, "qrdqn": QRDQN, "recurrentppo": RecurrentPPO,
}
#: name of the xrlkit metadata entry inside an SB3 zip
META_ENTRY = "xrlkit.json"
#: LSTM state: (hidden, cell), each ``[n_layers, B, hidden_size]``
LSTMState = tuple[torch.Tensor, torch.Tensor]

_CHANNELS_LAST = (OBS_SHAPE[1], OBS_SHAPE[2], OBS_SHAPE[0])


def sb3_to_xrlkit_obs(obs: np.ndarray) -> np.ndarray:
    """``VecFrameStack`` observations ``[B, 84, 84, 4]`` -> xrlkit layout ``[B, 4, 84, 84]``."""
    obs = np.asarray(obs)
    if obs.ndim != 4 or obs.shape[1:] != _CHANNELS_LAST:
        raise ValueError(f"expected SB3 Atari observations [B, 84, 84, 4], got {obs.shape}")
    return np.ascontiguousarray(obs.transpose(0, 3, 1, 2))


class XrlkitExtractor(BaseFeaturesExtractor):
    """An xrlkit encoder (the module built by :func:`~xrlkit.agents.encoders.make_encoder`) as an
    SB3 features extractor, optionally followed by ``Linear(out_features, hidden) + ReLU`` as in
    SB3's own ``NatureCNN``.

    Input: SB3-preprocessed images ``float [B, C, 84, 84]`` in [0, 1] (channels first, which SB3
    guarantees for image policies). Output: ``[B, hidden]`` (or ``[B, encoder.out_features]``
    with ``hidden=None``). Use through ``policy_kwargs=dict(features_extractor_class=
    XrlkitExtractor, features_extractor_kwargs=dict(encoder="ife"))``.
    """

    def __init__(self, observation_space: gym.spaces.Box, encoder: str = "ife", hidden: int | None = 512,
                 **encoder_kwargs: Any) -> None:
        shape = observation_space.shape
        if shape is None or len(shape) != 3:
            raise ValueError(f"XrlkitExtractor needs image observations [C, H, W], got shape {shape}")
        net = make_encoder(encoder, in_channels=shape[0], **encoder_kwargs)
        n_in: int = net.out_features  # type: ignore[assignment]
        super().__init__(observation_space, hidden or n_in)
        self.encoder_name = encoder
        self.encoder = net
        self.head: nn.Module = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU()) if hidden else nn.Identity()

    @property
    def attention(self) -> torch.Tensor | None:
        """The encoder's last attention ``[B, 14, 14]`` (IFE only), else ``None``."""
        return getattr(self.encoder, "attention", None)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(observations))


def detect_algo(data: dict[str, Any]) -> str:
    """Which algorithm wrote an SB3 zip, from its ``data`` entry (keys and policy module)."""
    module = str(data.get("policy_class", {}).get("__module__", ""))
    if "recurrent" in module:
        return "recurrentppo"
    if "n_quantiles" in data or "qrdqn" in module:
        return "qrdqn"
    if "exploration_rate" in data or module.startswith("stable_baselines3.dqn"):
        return "dqn"
    if "cg_max_steps" in data:
        raise ValueError("this SB3 model is TRPO, which xrlkit does not support")
    if "clip_range" in data:
        return "ppo"
    if "gae_lambda" in data:
        return "a2c"
    raise ValueError(f"cannot tell which SB3 algorithm wrote this model (policy module {module!r}); "
                     f"xrlkit supports {sorted(ALGOS)}")


def _read_zip(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ``data`` JSON and the xrlkit metadata (or ``None``) of an SB3 zip; ``ValueError`` if
    the file is not one."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise ValueError(f"{path} is a zip but not a Stable-Baselines3 model (no 'data' / 'policy.pth' entry)")
            data = json.loads(zf.read("data"))
            meta = json.loads(zf.read(META_ENTRY)) if META_ENTRY in names else None
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not a readable zip file ({err}); is it a corrupt or partial download?") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt Stable-Baselines3 zip ({err})") from err
    return data, meta


def read_xrlkit_meta(path: str | Path) -> dict[str, Any] | None:
    """xrlkit metadata stored in an SB3 zip, or ``None`` if it has none."""
    return _read_zip(Path(path))[1]


def write_xrlkit_meta(path: str | Path, meta: dict[str, Any]) -> Path:
    """Store ``meta`` (JSON-serialisable) as the ``xrlkit.json`` entry of an SB3 zip, replacing
    any earlier one. The zip stays loadable by plain SB3."""
    path = Path(path)
    _read_zip(path)
    with zipfile.ZipFile(path) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist() if info.filename != META_ENTRY]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, blob in entries:
            zf.writestr(info, blob)
        zf.writestr(META_ENTRY, json.dumps(meta, indent=1))
    tmp.replace(path)
    return path


class SB3Agent(ActMode):
    """The :class:`~xrlkit.agents.base.Agent` protocol around an SB3 model.

    ``logits(obs [B, 4, 84, 84] in [0, 255]) -> float [B, A]``: PPO / A2C / RecurrentPPO return
    the raw policy logits (``action_net`` output), DQN the Q-values, QR-DQN the mean over its
    quantiles. Float input keeps its autograd graph. ``act`` is the argmax, which equals SB3's
    ``predict(obs, deterministic=True)``; with ``act_mode="sample"`` (policy-gradient agents only;
    stored as ``act_mode`` in the xrlkit metadata) it draws from the policy, as
    ``predict(obs, deterministic=False)`` does and as RL-Zoo scores Atari PPO / A2C agents.

    RecurrentPPO: :meth:`logits` / :meth:`act` score a batch of *independent* states, each with a
    zero LSTM state and ``episode_start=True`` (what the policy does on the first step of an
    episode); pass a state to :meth:`recurrent_logits` to continue a sequence, or use
    :meth:`session` to play episodes statefully.
    """

    def __init__(self, model: BaseAlgorithm, action_meanings: tuple[str, ...] | None = None,
                 meta: dict[str, Any] | None = None, seed: int = 0, act_mode: str = "greedy") -> None:
        algo = next((name for name, cls in ALGOS.items() if isinstance(model, cls)), None)
        if algo is None:
            raise ValueError(f"unsupported SB3 model {type(model).__name__}; xrlkit supports {sorted(ALGOS)}")
        if not isinstance(model.action_space, gym.spaces.Discrete):
            raise ValueError(f"Atari agents need a discrete action space, got {model.action_space}")
        shape = tuple(model.policy.observation_space.shape or ())
        if shape not in (OBS_SHAPE, _CHANNELS_LAST):
            raise ValueError(f"the policy expects observations of shape {shape}, not stacked 84x84 Atari frames")
        self.algo = algo
        self.model = model
        self.policy = model.policy
        self.policy.set_training_mode(False)
        self.n_actions = int(model.action_space.n)
        meanings = tuple(action_meanings) if action_meanings else tuple(f"ACTION_{i}" for i in range(self.n_actions))
        if len(meanings) != self.n_actions:
            raise ValueError(f"{len(meanings)} action meanings for {self.n_actions} actions")
        self.action_meanings = meanings
        self.meta = dict(meta or {})
        self._channels_last = shape == _CHANNELS_LAST
        self._rng = np.random.default_rng(seed)
        if self.algo in ("dqn", "qrdqn"):
            self.sampling_refused = f"a {self.algo} agent has Q-values, not a policy to sample from"
        self.act_mode = act_mode

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @property
    def is_recurrent(self) -> bool:
        return self.algo == "recurrentppo"

    @property
    def features_extractor(self) -> nn.Module:
        """The extractor the logits go through (the actor's, for actor-critic policies)."""
        if self.algo == "dqn":
            return self.policy.q_net.features_extractor  # type: ignore[union-attr]
        if self.algo == "qrdqn":
            return self.policy.quantile_net.features_extractor  # type: ignore[union-attr]
        return self.policy.pi_features_extractor  # type: ignore[union-attr]

    @property
    def has_attention(self) -> bool:
        return isinstance(self.features_extractor, XrlkitExtractor) and self.features_extractor.encoder_name == "ife"

    def _policy_obs(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """xrlkit states -> float [0, 255] tensor in the policy's layout (graph kept)."""
        x = as_obs_tensor(obs, self.device)
        return x.permute(0, 2, 3, 1) if self._channels_last else x

    def initial_state(self, batch: int) -> LSTMState:
        """Zero LSTM state of the actor for ``batch`` sequences (RecurrentPPO only)."""
        if not self.is_recurrent:
            raise ValueError(f"{self.algo} has no recurrent state")
        layers, _, hidden = self.policy.lstm_hidden_state_shape  # type: ignore[union-attr]
        zeros = torch.zeros(layers, batch, hidden, device=self.device)
        return zeros, zeros.clone()

    def recurrent_logits(self, obs: np.ndarray | torch.Tensor, state: LSTMState | None = None,
                         episode_start: np.ndarray | torch.Tensor | None = None) -> tuple[torch.Tensor, LSTMState]:
        """RecurrentPPO: logits ``[B, A]`` for one step of ``B`` sequences and the next state.

        ``state`` defaults to zeros; ``episode_start`` (``[B]``, 1 = new episode, which resets
        that sequence's state) defaults to all ones when no state is given, else all zeros.
        """
        if not self.is_recurrent:
            raise ValueError(f"{self.algo} is not recurrent; use logits()")
        x = self._policy_obs(obs)
        b = x.shape[0]
        if episode_start is None:
            episode_start = torch.full((b,), 1.0 if state is None else 0.0, device=self.device)
        starts = torch.as_tensor(episode_start, dtype=torch.float32, device=self.device).reshape(b)
        state = self.initial_state(b) if state is None else state
        policy = self.policy
        features = BaseModel.extract_features(policy, x, policy.pi_features_extractor)  # type: ignore[arg-type]
        lstm = policy.lstm_actor  # type: ignore[union-attr]
        latent, new_state = policy._process_sequence(features, state, starts, lstm)  # type: ignore[union-attr]
        return policy.action_net(policy.mlp_extractor.forward_actor(latent)), new_state  # type: ignore[union-attr]

    def logits(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits / Q-values ``float [B, A]`` of states ``[B, 4, 84, 84]`` in [0, 255]."""
        if self.is_recurrent:
            return self.recurrent_logits(obs)[0]
        x = self._policy_obs(obs)
        if self.algo == "dqn":
            return self.policy.q_net(x)  # type: ignore[union-attr,operator]
        if self.algo == "qrdqn":
            return self.policy.quantile_net(x).mean(dim=1)  # type: ignore[union-attr,operator]
        policy = self.policy
        features = BaseModel.extract_features(policy, x, policy.pi_features_extractor)  # type: ignore[arg-type]
        return policy.action_net(policy.mlp_extractor.forward_actor(features))  # type: ignore[union-attr]

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float = 0.0) -> np.ndarray:
        """Actions ``int64 [B]`` by :attr:`act_mode`, each uniform with probability ``epsilon``."""
        return choose_actions(self.logits(obs), epsilon, self._rng, self.act_mode)

    def attention(self, obs: np.ndarray | torch.Tensor, size: tuple[int, int] = FRAME_SHAPE,
                  mode: str = "nearest") -> torch.Tensor:
        """IFE attention of each state upsampled to ``size``: ``float [B, *size]``, summing to 1
        (see :meth:`xrlkit.agents.qnet.QAgent.attention`). Needs an :class:`XrlkitExtractor`
        with the ``ife`` encoder."""
        if not self.has_attention:
            raise ValueError(f"this {self.algo} agent has no IFE attention; train it with encoder='ife'")
        with torch.no_grad():
            self.logits(obs)
            att = self.features_extractor.attention  # type: ignore[union-attr]
        return upsample_attention(att, size, mode)

    def session(self, n_envs: int) -> PolicySession:
        """A stateful acting helper for ``n_envs`` parallel episodes (see :class:`PolicySession`)."""
        return PolicySession(self, n_envs)


class PolicySession:
    """Acts through episodes of ``n_envs`` parallel envs, carrying the LSTM state of a
    RecurrentPPO agent from step to step (for feed-forward agents it just calls ``act``).

    Call :meth:`act` with each step's observations and ``episode_start`` (``bool [n_envs]``:
    True for the first observation of an episode, e.g. ``terminated | truncated`` of the
    previous step with same-step autoreset); the first call starts all episodes.
    """

    def __init__(self, agent: SB3Agent, n_envs: int) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        self.agent = agent
        self.n_envs = n_envs
        self.state: LSTMState | None = agent.initial_state(n_envs) if agent.is_recurrent else None
        self._started = False

    @torch.no_grad()
    def logits(self, obs: np.ndarray | torch.Tensor, episode_start: np.ndarray | None = None) -> torch.Tensor:
        """Logits ``[n_envs, A]`` for this step; advances the recurrent state."""
        if len(obs) != self.n_envs:
            raise ValueError(f"session is for {self.n_envs} envs, got {len(obs)} observations")
        starts = np.ones(self.n_envs, bool) if not self._started else (
            np.zeros(self.n_envs, bool) if episode_start is None else np.asarray(episode_start, bool))
        self._started = True
        if self.state is None:
            return self.agent.logits(obs)
        out, self.state = self.agent.recurrent_logits(obs, self.state, starts)
        return out

    def act(self, obs: np.ndarray | torch.Tensor, episode_start: np.ndarray | None = None,
            epsilon: float = 0.0) -> np.ndarray:
        """Actions ``int64 [n_envs]`` for this step, by the agent's ``act_mode`` (epsilon-greedy)."""
        return choose_actions(self.logits(obs, episode_start), epsilon, self.agent._rng, self.agent.act_mode)


def _custom_objects(data: dict[str, Any]) -> dict[str, Any]:
    """Replacements for pickled objects, so zips from other Python / SB3 / numpy versions (e.g.
    RL-Zoo's, or one saved under numpy 2 and loaded under OCAtari's numpy<2) load for inference:
    training schedules become constants, the last rollout's state is dropped, and image (uint8
    Box) and Discrete spaces are rebuilt from the readable fields SB3 writes beside the pickle."""
    constant = lambda _: 0.0  # noqa: E731
    out: dict[str, Any] = {"learning_rate": 0.0, "lr_schedule": constant, "clip_range": constant,
                           "exploration_schedule": constant, "_last_obs": None, "_last_episode_starts": None,
                           "_last_original_obs": None, "ep_info_buffer": None, "ep_success_buffer": None}
    for key in ("observation_space", "action_space"):
        space = data.get(key, {})
        kind = space.get(":type:", "")
        if kind.endswith("spaces.box.Box'>") and space.get("dtype") == "uint8":
            out[key] = gym.spaces.Box(0, 255, tuple(space["_shape"]), np.uint8)
        elif kind.endswith("spaces.discrete.Discrete'>"):
            out[key] = gym.spaces.Discrete(int(space["n"]), start=int(space.get("start", 0)))
    return out


def load_sb3_agent(path: str | Path, game: str | None = None, device: str | torch.device = "cpu",
                   act_mode: str | None = None) -> SB3Agent:
    """Load an SB3 ``.zip`` (PPO, A2C, DQN, QR-DQN, RecurrentPPO; RL-Zoo format) as an agent.

    The algorithm comes from the xrlkit metadata if present, else from the zip's ``data``.
    With metadata, ``game`` must match the stored one; without, the model's action count must
    equal the size of ``game``'s minimal action set (with neither, actions are named
    ``ACTION_i``). Pickled training schedules are replaced by constants, so zips from other
    Python / SB3 versions load; the returned model is for inference. ``act_mode`` defaults to the
    one stored in the metadata (``"greedy"`` if none). Raises ``FileNotFoundError`` for a missing
    file and ``ValueError`` for a corrupt / non-SB3 zip, an unknown algorithm or a mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SB3 model at {path}")
    data, meta = _read_zip(path)
    algo = (meta or {}).get("algo") or detect_algo(data)
    if algo not in ALGOS:
        raise ValueError(f"{path}: unknown algorithm {algo!r}; xrlkit supports {sorted(ALGOS)}")
    try:
        model = ALGOS[algo].load(path, device=device, custom_objects=_custom_objects(data))
    except Exception as err:  # SB3 raises many types for a bad file; report them as one
        raise ValueError(f"{path}: could not load as {algo} ({type(err).__name__}: {err})") from err
    n_actions = int(getattr(model.action_space, "n", -1))
    if meta is not None:
        if game is not None and resolve_game(game) != meta.get("game"):
            raise ValueError(f"{path} was trained on {meta.get('game')!r}, not {resolve_game(game)!r}")
        if meta.get("n_actions", n_actions) != n_actions:
            raise ValueError(f"{path}: metadata says {meta['n_actions']} actions, the policy has {n_actions}")
        meanings = meta.get("action_meanings") or (action_meanings(meta["game"]) if meta.get("game") else None)
    elif game is not None:
        meanings = action_meanings(game)
        if len(meanings) != n_actions:
            raise ValueError(f"{path} has {n_actions} actions but {resolve_game(game)} has {len(meanings)}; "
                             f"was it trained on another game?")
    else:
        meanings = None
    info = {"algo": algo, "path": str(path), **(meta or {})}
    if game is not None:
        info["game"] = resolve_game(game)
    return SB3Agent(model, meanings, info, act_mode=act_mode or (meta or {}).get("act_mode", "greedy"))


class HubError(ValueError):
    """The Hugging Face Hub could not be used (package missing, offline, no such file)."""


def load_from_hub(repo_id: str, filename: str | None = None, *, game: str | None = None,
                  device: str | torch.device = "cpu") -> SB3Agent:
    """Download an SB3 model from the Hugging Face Hub (e.g. ``"sb3/ppo-SeaquestNoFrameskip-v4"``)
    with ``huggingface_sb3`` and load it with :func:`load_sb3_agent`.

    ``filename`` defaults to ``"<repo name>.zip"``; ``game`` defaults to the game named in the
    repo id. Raises :class:`HubError` with what to do when the package is missing or the
    download fails (e.g. offline).
    """
    name = repo_id.rsplit("/", 1)[-1]
    filename = filename or f"{name}.zip"
    manual = (f"or download https://huggingface.co/{repo_id}/blob/main/{filename} on a machine with "
              f"internet access and load it with xrlkit.agents.sb3.load_sb3_agent(path)")
    try:
        from huggingface_sb3 import load_from_hub as hub_download
    except ImportError as err:
        raise HubError(f"loading {repo_id} needs the 'huggingface_sb3' package: pip install huggingface_sb3, "
                       f"{manual}") from err
    try:
        path = hub_download(repo_id, filename)
    except Exception as err:  # network, auth and missing-file errors all mean the same to the user
        raise HubError(f"could not download {filename} from {repo_id} ({type(err).__name__}: {err}); "
                       f"check the repo id and your connection, {manual}") from err
    if game is None:
        try:
            game = resolve_game(name.split("-", 1)[-1])
        except ValueError:
            game = None
    return load_sb3_agent(path, game=game, device=device)


#: RL-Zoo's ``atari`` hyperparameters (hyperparams/{ppo,ppo_lstm,a2c}.yml), as data.
#: ``lin_X`` is a schedule decaying linearly from X to 0; ``wrapper_kwargs`` go to SB3's
#: ``AtariWrapper`` (rlzoo protocol only); all use a 4-frame stack.
RLZOO_PRESETS: dict[str, dict[str, Any]] = {
    "ppo": {
        "policy": "CnnPolicy", "n_envs": 8, "n_timesteps": 10_000_000, "wrapper_kwargs": {},
        "hyperparams": {"n_steps": 128, "n_epochs": 4, "batch_size": 256, "learning_rate": "lin_2.5e-4",
                        "clip_range": "lin_0.1", "vf_coef": 0.5, "ent_coef": 0.01},
    },
    "recurrentppo": {
        "policy": "CnnLstmPolicy", "n_envs": 8, "n_timesteps": 10_000_000,
        "wrapper_kwargs": {"terminal_on_life_loss": False},
        "hyperparams": {"n_steps": 128, "n_epochs": 4, "batch_size": 256, "learning_rate": "lin_2.5e-4",
                        "clip_range": "lin_0.1", "vf_coef": 0.5, "ent_coef": 0.01},
    },
    "a2c": {
        "policy": "CnnPolicy", "n_envs": 16, "n_timesteps": 10_000_000, "wrapper_kwargs": {},
        "hyperparams": {"ent_coef": 0.01, "vf_coef": 0.25,
                        "policy_kwargs": {"optimizer_class": "RMSpropTFLike", "optimizer_kwargs": {"eps": 1e-5}}},
    },
}
_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"RMSpropTFLike": RMSpropTFLike}


def _build_hyperparams(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn preset data into SB3 keyword arguments (schedules, optimizer classes)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and value.startswith("lin_"):
            out[key] = LinearSchedule(float(value[4:]), 0.0, 1.0)
        elif key == "policy_kwargs":
            kw = dict(value)
            if isinstance(kw.get("optimizer_class"), str):
                kw["optimizer_class"] = _OPTIMIZERS[kw["optimizer_class"]]
            out[key] = kw
        else:
            out[key] = value
    return out


def make_sb3_train_env(game: str, n_envs: int, protocol: str = "rlzoo", seed: int = 0,
                       wrapper_kwargs: dict[str, Any] | None = None) -> VecEnv:
    """The SB3 training VecEnv. ``rlzoo``: exactly RL-Zoo's (``make_atari_env`` on
    ``{Game}NoFrameskip-v4`` + ``VecFrameStack(4)``, channels last); other protocols: xrlkit's
    training envs (:func:`~xrlkit.envs.make_env`, ``train=True``, channels first), monitored."""
    game = resolve_game(game)
    if get_protocol(protocol).name == "rlzoo":
        env = make_atari_env(f"{game}NoFrameskip-v4", n_envs=n_envs, seed=seed, wrapper_kwargs=wrapper_kwargs or {})
        return VecFrameStack(env, n_stack=4)
    return make_vec_env(lambda: make_env(game, protocol, train=True), n_envs=n_envs, seed=seed)


class _ProgressBar(BaseCallback):
    """tqdm bar over environment steps."""

    def __init__(self, total: int, initial: int) -> None:
        super().__init__()
        self._bar = tqdm(total=total, initial=initial, unit="step", desc="train")

    def _on_step(self) -> bool:
        self._bar.update(self.num_timesteps - self._bar.n)
        return True

    def _on_training_end(self) -> None:
        self._bar.close()


class _PeriodicEval(BaseCallback):
    """Every ``every`` env steps, evaluate the current policy and append to ``metrics.csv``."""

    FIELDS = ("steps", "frames", "eval_mean", "eval_hns", "eval_episodes", "wall_s")

    def __init__(self, run: Callable[[int], None], every: int, start: int) -> None:
        super().__init__()
        self._run, self._every, self._next = run, every, (start // every + 1) * every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._run(self.num_timesteps)
            self._next = (self.num_timesteps // self._every + 1) * self._every
        return True


def _latest_checkpoint(out_dir: Path, algo: str) -> tuple[Path, int] | None:
    """The saved model in ``out_dir`` with the most steps (checkpoints and final.zip)."""
    found: list[tuple[int, Path]] = []
    for p in (out_dir / "checkpoints").glob(f"{algo}_*_steps.zip"):
        m = re.fullmatch(rf"{algo}_(\d+)_steps\.zip", p.name)
        if m:
            found.append((int(m.group(1)), p))
    final = out_dir / "final.zip"
    if final.is_file():
        meta = read_xrlkit_meta(final) or {}
        found.append((int(meta.get("steps", 0)), final))
    if not found:
        return None
    steps, path = max(found)
    return path, steps


def train_sb3(
    game: str,
    *,
    algo: str = "ppo",
    encoder: str = "nature",
    total_steps: int,
    seed: int = 0,
    device: str = "auto",
    out_dir: str | Path,
    n_envs: int | None = None,
    protocol: str = "rlzoo",
    progress: bool = True,
    resume: bool = True,
    checkpoint_every: int = 100_000,
    eval_every: int = 250_000,
    eval_episodes: int = 10,
    eval_max_steps: int = 27_000,
    hyperparams: dict[str, Any] | None = None,
) -> Path:
    """Train an SB3 agent with RL-Zoo's Atari preset; returns the path of ``out_dir/final.zip``.

    ``algo``: ``ppo``, ``recurrentppo`` (sb3-contrib PPO with a CNN-LSTM policy: a *synchronous*
    PPO-LSTM, not the IFE paper's asynchronous A3C-LSTM) or ``a2c``. With ``protocol="rlzoo"``
    the training env is RL-Zoo's own (for ``recurrentppo`` its preset turns the life-loss signal
    off, so its evaluation under ``rlzoo``, which keeps SB3's FIRE after a lost life, differs
    slightly from RL-Zoo's); other protocols train on xrlkit's training envs. ``encoder``: ``nature`` uses
    SB3's own CNN (the model is then exactly an RL-Zoo model); ``impala`` / ``ife`` use
    :class:`XrlkitExtractor`. ``total_steps`` counts agent steps summed over the ``n_envs`` envs
    (frames = 4 x steps); ``n_envs`` defaults to the preset's (8 for PPO, 16 for A2C).
    ``hyperparams`` override preset entries (e.g. a smaller ``n_steps``).

    Writes ``out_dir/checkpoints/{algo}_{steps}_steps.zip`` every ``checkpoint_every`` steps,
    appends ``steps, frames, eval_mean, eval_hns, eval_episodes, wall_s`` to
    ``out_dir/metrics.csv`` every ``eval_every`` steps and at the end (unclipped game scores
    under ``protocol``'s evaluation env), and stores xrlkit metadata in ``final.zip``. With
    ``resume``, training continues from the saved model with the most steps in ``out_dir``
    (returning at once if it already has ``total_steps``).
    """
    from xrlkit.checkpoint import command_line  # checkpoint imports the agents package

    game = resolve_game(game)
    protocol = get_protocol(protocol).name
    if algo not in RLZOO_PRESETS:
        raise ValueError(f"train_sb3 supports algo in {sorted(RLZOO_PRESETS)}, got {algo!r}")
    choose("encoder", encoder, ENCODERS)
    preset = RLZOO_PRESETS[algo]
    n_envs = preset["n_envs"] if n_envs is None else n_envs
    if total_steps < 1 or n_envs < 1:
        raise ValueError(f"total_steps and n_envs must be >= 1, got {total_steps} and {n_envs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = {**preset["hyperparams"], **(hyperparams or {})}
    if encoder != "nature":
        raw["policy_kwargs"] = {**raw.get("policy_kwargs", {}), "features_extractor_class": XrlkitExtractor,
                                "features_extractor_kwargs": {"encoder": encoder}}
    env = make_sb3_train_env(game, n_envs, protocol, seed, preset["wrapper_kwargs"])
    cls = ALGOS[algo]
    latest = _latest_checkpoint(out_dir, algo) if resume else None
    if latest is not None:
        model = cls.load(latest[0], env=env, device=device)
        if model.num_timesteps >= total_steps and latest[0].name == "final.zip":
            env.close()
            return latest[0]
    else:
        model = cls(preset["policy"], env, seed=seed, device=device, verbose=0, **_build_hyperparams(raw))
    start = model.num_timesteps
    metrics = curve_path(out_dir)
    t0 = time.time()
    evaluated: list[int] = []

    def run_eval(steps: int) -> None:
        evaluated.append(steps)
        result = evaluate(SB3Agent(model, action_meanings(game)), game, eval_episodes, protocol=protocol,
                          seed=seed + 10_000, max_steps=eval_max_steps)
        model.policy.set_training_mode(False)
        new = not metrics.is_file()
        with metrics.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(_PeriodicEval.FIELDS)
            writer.writerow([steps, 4 * steps, f"{result.mean:.3f}", f"{result.hns:.5f}", len(result.returns),
                             f"{time.time() - t0:.1f}"])

    callbacks: list[BaseCallback] = [
        CheckpointCallback(max(checkpoint_every // n_envs, 1), str(out_dir / "checkpoints"), name_prefix=algo),
        _PeriodicEval(run_eval, eval_every, start),
    ]
    if progress:
        callbacks.append(_ProgressBar(total_steps, start))
    if total_steps > start:
        model.learn(total_steps - start, callback=CallbackList(callbacks), reset_num_timesteps=False)
    if model.num_timesteps not in evaluated:
        run_eval(model.num_timesteps)
    final = out_dir / "final.zip"
    model.save(final)
    env.close()
    write_xrlkit_meta(final, {
        "game": game, "algo": algo, "encoder": encoder, "protocol": protocol, "steps": int(model.num_timesteps),
        "frames": 4 * int(model.num_timesteps), "seed": seed, "n_envs": n_envs,
        "n_actions": int(model.action_space.n),  # type: ignore[attr-defined]
        "action_meanings": list(action_meanings(game)),
        "preset": "rlzoo", "hyperparams": json.loads(json.dumps(raw, default=lambda o: getattr(o, "__name__", str(o)))),
        "command": command_line(), "versions": _versions(),
    })
    return final


def _versions() -> dict[str, str]:
    """Library versions, with SB3's, for provenance."""
    import sb3_contrib
    import stable_baselines3

    from xrlkit.checkpoint import library_versions

    return {**library_versions(), "stable_baselines3": stable_baselines3.__version__,
            "sb3_contrib": sb3_contrib.__version__}
