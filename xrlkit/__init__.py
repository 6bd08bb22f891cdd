"""xrlkit: explainable RL study kit for vision-based Atari agents."""

import contextlib
import io

# The old ``gym`` (installed beside gymnasium for Super Mario Bros' nes-py) prints a notice to
# move to gymnasium when imported, and Stable-Baselines3 imports it whenever it is installed; xrlkit
# is on gymnasium already (see xrlkit.worlds), so the notice would only mislead. Imported here,
# once and quietly; absent, nothing happens.
with contextlib.redirect_stderr(io.StringIO()):
    try:
        import gym  # noqa: F401
    except ImportError:
        pass

from xrlkit.runtime import flush_denormals

flush_denormals()  # before torch starts its worker threads, which inherit the mode (see xrlkit.runtime)

__version__ = "0.1.0"
