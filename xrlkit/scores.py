"""Per-state faithfulness scores on disk, so that a rerun computes only what changed.

``xrlkit evaluate-explainers`` spends minutes per explainer on a few hundred states (RISE,
occlusion, LIME, SARFA run the agent hundreds of times a state). It keeps every explainer's
per-state scores in one safetensors file beside its table (``<table>.scores.safetensors``),
written again after each explainer (:class:`ScoreStore`). A rerun on the same states reads
them back and runs only the explainers or metrics that are missing: a run killed
half-way resumes, and an explainer that was replaced (a retrained VisionMask) is scored alone
while the others' scores, and so the paired comparisons with them, are reused.

Scores are reused only when they are certainly the same computation: the file records a
fingerprint of the setup (the states and actions, the agent file, the metric options, the
batch size, the seed and the xrlkit version) and one per explainer (its name, and for a
VisionMask the SHA-256 of its checkpoint). A different setup discards the whole file; a
different explainer fingerprint discards that explainer's scores.

Layout: one float64 tensor ``[N]`` per ``"<explainer>/<metric>"``; metadata
``{"kind": "explainer-scores", "setup": ..., "explainers": {name: fingerprint}}``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

import xrlkit
from xrlkit.checkpoint import load_tensors
from xrlkit.runlog import atomic_save

META_KIND = "explainer-scores"


def fingerprint(*parts: Any, arrays: tuple[np.ndarray | torch.Tensor, ...] = ()) -> str:
    """SHA-256 (hex) of JSON-serialisable ``parts`` and the bytes of ``arrays`` (with their
    shapes and dtypes), e.g. of a run's states, actions and options."""
    h = hashlib.sha256(json.dumps([*parts, xrlkit.__version__], sort_keys=True, default=str).encode())
    for a in arrays:
        a = np.ascontiguousarray(torch.as_tensor(a).cpu().numpy())
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def model_identity(path: str | Path) -> str:
    """A model file's SHA-256, or the name of a model that is not a file (a scripted agent):
    the part of a :func:`fingerprint` that changes when a model is retrained."""
    from xrlkit.checkpoint import file_sha256

    return file_sha256(path) if Path(path).is_file() else str(path)


class ScoreStore:
    """The per-state scores file at ``path`` for one setup (``setup``: its :func:`fingerprint`)
    and the explainers of this run (``explainers``: name -> fingerprint).

    :attr:`known` holds the stored scores this run can reuse, ``{explainer: {metric: float [N]}}``;
    :meth:`add` stores an explainer's scores and rewrites the file. Stored scores of explainers
    that this run does not ask for are kept in the file; a file of another setup is replaced.
    A file that is not a readable scores file raises ``ValueError`` naming it.
    """

    def __init__(self, path: str | Path, setup: str, explainers: Mapping[str, str]) -> None:
        self.path, self.setup, self.explainers = Path(path), setup, dict(explainers)
        self._scores: dict[str, dict[str, np.ndarray]] = {}
        self._fingerprints: dict[str, str] = {}
        self.known: dict[str, dict[str, np.ndarray]] = {}
        if not self.path.is_file():
            return
        tensors, meta = load_tensors(self.path)
        if meta.get("kind") != META_KIND:
            raise ValueError(f"{self.path} holds a {meta.get('kind')!r} file, not explainer scores; move it or "
                             "pass another --scores path")
        if meta.get("setup") != setup:
            print(f"{self.path.name}: scores of other states or options; every explainer is scored again", flush=True)
            return
        stored = meta.get("explainers", {})
        for key, value in tensors.items():
            name, _, metric = key.partition("/")
            if name not in self.explainers:
                self._scores.setdefault(name, {})[metric] = value.numpy()
                self._fingerprints[name] = stored[name]
            elif stored.get(name) == self.explainers[name]:
                self.known.setdefault(name, {})[metric] = value.numpy()
        self._scores.update(self.known)
        self._fingerprints.update({name: self.explainers[name] for name in self.known})
        changed = sorted(n for n in self.explainers if n in stored and stored[n] != self.explainers[n])
        if self.known or changed:
            print(f"{self.path.name}: reusing the scores of {', '.join(sorted(self.known)) or 'no explainer'}"
                  + (f"; {', '.join(changed)} changed since, scored again" if changed else ""), flush=True)

    def add(self, name: str, scores: Mapping[str, np.ndarray]) -> None:
        """Store explainer ``name``'s per-state ``scores`` (metric -> [N]) and rewrite the file
        atomically (a kill during the write leaves the previous file whole)."""
        self._scores[name] = {**self._scores.get(name, {}), **scores}
        self._fingerprints[name] = self.explainers[name]
        tensors = {f"{n}/{metric}": torch.as_tensor(np.asarray(v, dtype=np.float64))
                   for n, by_metric in self._scores.items() for metric, v in by_metric.items()}
        atomic_save(self.path, tensors, {"kind": META_KIND, "setup": self.setup, "explainers": self._fingerprints})
