"""Train the shipped default PPO expert for one game on a CPU, with Stable-Baselines3 as RL-Zoo does.

RL-Zoo's Atari PPO hyperparameters (8 envs, 128 steps, 4 epochs, batch 256, lr and clip range
2.5e-4 / 0.1 decayed linearly, ent 0.01, vf 0.5) on ``{Game}NoFrameskip-v4`` with SB3's
``AtariWrapper`` and a 4-frame stack. Usage:

    python scripts/train_default_ppo.py Breakout 1500000 runs/ppo-Breakout

This is the exact script that produced the shipped Breakout expert (kept as its provenance; it
predates the packaged trainers). For new agents use ``xrlkit train --algo ppo`` (xrlkit's own
PPO loop, several times faster on a CPU) or ``--algo sb3-ppo`` (this same SB3 model, with
evaluation, resume and xrlkit metadata).
"""

import sys
from pathlib import Path

import ale_py
import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack


def linear(start: float):
    return lambda progress: progress * start


def main(game: str, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    gym.register_envs(ale_py)
    out_dir = Path(out)
    env = VecFrameStack(make_atari_env(f"{game}NoFrameskip-v4", n_envs=8, seed=0), n_stack=4)
    model = PPO(
        "CnnPolicy", env, n_steps=128, n_epochs=4, batch_size=256, learning_rate=linear(2.5e-4),
        clip_range=linear(0.1), vf_coef=0.5, ent_coef=0.01, seed=0, verbose=1, device="cpu",
    )
    ckpt = CheckpointCallback(save_freq=100_000 // 8, save_path=str(out_dir / "checkpoints"), name_prefix="ppo")
    model.learn(steps, callback=ckpt, progress_bar=False)
    model.save(out_dir / "final.zip")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
