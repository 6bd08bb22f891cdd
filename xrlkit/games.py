"""Game and world names, Atari game lists and reference scores.

The 57-game suite (Mnih et al. 2015 / Badia et al. 2020), the 26-game Atari-100k subset
(Kaiser et al. 2020), and the random / human reference scores used for human-normalized
scores (HNS) throughout the DQN literature (the figures published with the DQN and Rainbow
papers). Games are named by their ALE short name in CamelCase ("Pong", "MsPacman"); the other
worlds (:data:`WORLDS`, built by :mod:`xrlkit.worlds`) by their gymnasium id.
"""

from __future__ import annotations

import difflib
from typing import Iterable

#: short name -> (random score, human score)
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "Asteroids": (719.1, 47388.7),
    "Atlantis": (12850.0, 29028.1),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "BeamRider": (363.9, 16926.5),
    "Berzerk": (123.7, 2630.4),
    "Bowling": (23.1, 160.7),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "Centipede": (2090.9, 12017.0),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "Defender": (2874.5, 18688.9),
    "DemonAttack": (152.1, 1971.0),
    "DoubleDunk": (-18.6, -16.4),
    "Enduro": (0.0, 860.5),
    "FishingDerby": (-91.7, -38.7),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Gravitar": (173.0, 3351.4),
    "Hero": (1027.0, 30826.4),
    "IceHockey": (-11.2, 0.9),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MontezumaRevenge": (0.0, 4753.3),
    "MsPacman": (307.3, 6951.6),
    "NameThisGame": (2292.3, 8049.0),
    "Phoenix": (761.4, 7242.6),
    "Pitfall": (-229.4, 6463.7),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "Riverraid": (1338.5, 17118.0),
    "RoadRunner": (11.5, 7845.0),
    "Robotank": (2.2, 11.9),
    "Seaquest": (68.4, 42054.7),
    "Skiing": (-17098.1, -4336.9),
    "Solaris": (1236.3, 12326.7),
    "SpaceInvaders": (148.0, 1668.7),
    "StarGunner": (664.0, 10250.0),
    "Surround": (-10.0, 6.5),
    "Tennis": (-23.8, -8.3),
    "TimePilot": (3568.0, 5229.2),
    "Tutankham": (11.4, 167.6),
    "UpNDown": (533.4, 11693.2),
    "Venture": (0.0, 1187.5),
    # The random score exceeds the human one under some evaluation protocols.
    "VideoPinball": (16256.9, 17667.9),
    "WizardOfWor": (563.5, 4756.5),
    "YarsRevenge": (3092.9, 54576.9),
    "Zaxxon": (32.5, 9173.3),
}

#: The Atari-57 suite, alphabetical.
ATARI_57: tuple[str, ...] = tuple(sorted(REFERENCE_SCORES))

#: The Atari-100k benchmark (26 games).
ATARI_100K: tuple[str, ...] = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
    "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero",
    "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert",
    "RoadRunner", "Seaquest", "UpNDown",
)

#: the VisionMask paper's worlds beyond Atari that xrlkit builds (:mod:`xrlkit.worlds`)
WORLDS: tuple[str, ...] = ("highway-fast-v0", "SuperMarioBros-1-1-v0", "VizdoomBasic-v1", "VizdoomDefendCenter-v1",
                           "VizdoomHealthGathering-v1")

_BY_KEY = {name.lower().replace("_", ""): name for name in ATARI_57}
_WORLD_BY_KEY = {name.lower(): name for name in WORLDS}


def is_atari(name: str) -> bool:
    """Whether ``name`` (already resolved) is an Atari game rather than another world."""
    return name not in WORLDS


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "").replace(" ", "")


def resolve_game(name: str) -> str:
    """Return the canonical name of an Atari-57 game or of another world (:data:`WORLDS`).

    Accepts "Pong", "pong", "ms_pacman", "MsPacman", "ALE/Pong-v5" and "PongNoFrameskip-v4", and a
    world's gymnasium id in any case ("highway-fast-v0"). Raises ``ValueError`` naming the closest
    games and worlds for anything else.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"game must be a non-empty string, got {name!r}")
    if name.strip().lower() in _WORLD_BY_KEY:
        return _WORLD_BY_KEY[name.strip().lower()]
    raw = name.strip()
    if raw.startswith("ALE/"):
        raw = raw[4:]
    for suffix in ("NoFrameskip-v4", "Deterministic-v4", "-v5", "-v4", "-v0"):
        if raw.endswith(suffix):
            raw = raw[: -len(suffix)]
            break
    key = _key(raw)
    if key in _BY_KEY:
        return _BY_KEY[key]
    known = {**_BY_KEY, **_WORLD_BY_KEY}
    close = difflib.get_close_matches(key, list(_BY_KEY), n=3, cutoff=0.5)
    close += difflib.get_close_matches(name.strip().lower(), list(_WORLD_BY_KEY), n=2, cutoff=0.6)
    hint = ", ".join(known[c] for c in close) if close else "see xrlkit.games.ATARI_57 and WORLDS"
    raise ValueError(f"unknown Atari game or world {name!r}; did you mean: {hint}?")


def resolve_games(spec: str | Iterable[str]) -> list[str]:
    """Resolve "all", "atari100k", a comma-separated string or an iterable of names."""
    if isinstance(spec, str):
        if spec.strip().lower() in {"all", "atari57"}:
            return list(ATARI_57)
        if spec.strip().lower() in {"atari100k", "100k"}:
            return list(ATARI_100K)
        spec = [s for s in spec.split(",") if s.strip()]
    return [resolve_game(s) for s in spec]


def human_normalized_score(game: str, score: float) -> float:
    """(score - random) / (human - random) for ``game``; 1.0 means human level. NaN for a world
    other than Atari, which has no human reference score."""
    game = resolve_game(game)
    if not is_atari(game):
        return float("nan")
    random_score, human_score = REFERENCE_SCORES[game]
    return (score - random_score) / (human_score - random_score)
