"""xrlkit: explainable RL study kit for vision-based Atari agents."""

__version__ = "0.1.0"
