"""``xrlkit evaluate-explainers``: every explainer x every metric on real states of an agent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from xrlkit.agents.base import greedy_actions
from xrlkit.defaults import model_path
from xrlkit.explainers import EXPLAINERS, Explainer, VisionMaskExplainer, make_explainer
from xrlkit.games import resolve_game
from xrlkit.evaluation import rollout
from xrlkit.metrics import (
    METRICS, REFERENCE_METRICS, SEEDED_METRICS, make_metric, metric_sanity, per_state_scores, score_table,
)
from xrlkit.references import REFERENCE_MODES, estimate_background
from xrlkit.runtime import ALLOCATORS
from xrlkit.scores import ScoreStore, fingerprint, model_identity

DEFAULT_EXPLAINERS = "grad,ig,gradcam,occlusion,greydanus,sarfa,lime,rise,random"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-explainers", help="score saliency explainers with faithfulness metrics on real states")
    p.add_argument("--game", required=True, help="game the agent plays, e.g. Breakout")
    p.add_argument("--agent", required=True,
                   help="agent checkpoint (.safetensors or SB3 .zip), a scripted agent's name, or 'shipped' "
                        "for the game's shipped expert")
    p.add_argument("--explainers", default=DEFAULT_EXPLAINERS,
                   help=f"comma-separated, from {','.join(EXPLAINERS)} (default: {DEFAULT_EXPLAINERS}; "
                        "'ife' needs an IFE agent, 'visionmask' needs --visionmask)")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated, from {','.join(METRICS)}")
    p.add_argument("--visionmask", default=None,
                   help="VisionMask checkpoint for the 'visionmask' explainer, or 'shipped' for the game's shipped one")
    p.add_argument("--reference", default="black", choices=REFERENCE_MODES,
                   help="what accuracy / insertion / deletion put in place of removed pixels (default black; "
                        "background: per-pixel median of the collected states)")
    p.add_argument("--lle-samples", type=int, default=10, help="perturbations per state of the lle metric (default 10)")
    p.add_argument("--n-states", type=int, default=32, help="states collected by playing the agent (default 32)")
    p.add_argument("--seed", type=int, default=0, help="env, RISE, LIME, random-explainer, LLE, ROAD and bootstrap seed")
    p.add_argument("--epsilon", type=float, default=0.05, help="exploration while collecting states")
    p.add_argument("--every", type=int, default=4, help="keep every k-th state of the rollout (default 4)")
    p.add_argument("--compare-with", default="random,visionmask",
                   help="comma-separated explainers every other one is compared with, paired on the same states "
                        "(columns vs_<name>, vs_<name>_low, vs_<name>_high; names not run are skipped; "
                        "default random,visionmask)")
    p.add_argument("--batch-size", type=int, default=8, help="states explained together")
    p.add_argument("--device", default="cpu", help="torch device for the agent and explainers")
    p.add_argument("--allocator", choices=ALLOCATORS, default="auto",
                   help="auto: re-run with tcmalloc preloaded where installed (~1.4x faster perturbation explainers)")
    p.add_argument("--out", default="explainers.csv", help="CSV table; a .json copy is written next to it")
    p.add_argument("--scores", default=None,
                   help="per-state scores file, reused by a rerun on the same states so that only new or changed "
                        "explainers are scored (default: beside --out, <out>.scores.safetensors; see xrlkit.scores)")
    p.set_defaults(func=_run)


def _split(spec: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown {what} {unknown or spec!r}; choose from {','.join(known)}")
    return names


def build_explainers(names: list[str], agent, args: argparse.Namespace) -> dict[str, Explainer]:
    """The named explainers of ``agent`` as this command builds them (``args.seed``,
    ``args.visionmask``, ``args.device``), so other tools explain exactly what it scores."""
    explainers: dict[str, Explainer] = {}
    for name in names:
        if name == "visionmask":
            if not args.visionmask:
                raise ValueError("the 'visionmask' explainer needs --visionmask CHECKPOINT")
            from xrlkit.visionmask.model import load_visionmask

            explainers[name] = VisionMaskExplainer(load_visionmask(args.visionmask, agent, args.device), args.device)
        elif name in ("rise", "lime", "random"):
            explainers[name] = make_explainer(name, agent, seed=args.seed)
        else:
            explainers[name] = make_explainer(name, agent)
    return explainers


def _metric_options(name: str, args: argparse.Namespace, reference: dict) -> dict:
    options: dict = {"seed": args.seed} if name in SEEDED_METRICS else {}
    if name in REFERENCE_METRICS:
        options.update(reference)
    if name == "lle":
        options["n_samples"] = args.lle_samples
    return options


def _run(args: argparse.Namespace) -> int:
    from xrlkit.agents.load import agent_protocol, load_any_agent
    from xrlkit.runlog import check_out_file
    from xrlkit.runtime import reexec_with_allocator

    game = resolve_game(args.game)
    explainer_names = _split(args.explainers, EXPLAINERS, "explainers")
    metric_names = _split(args.metrics, METRICS, "metrics")
    compare_with = _split(args.compare_with, EXPLAINERS, "--compare-with explainers")
    args.agent = model_path(args.agent, game, "expert")
    if args.visionmask is not None:
        args.visionmask = model_path(args.visionmask, game, "visionmask")
    out = check_out_file(args.out)
    if getattr(args, "from_command_line", False):
        reexec_with_allocator(args.allocator)
    agent = load_any_agent(args.agent, game=game, device=args.device)
    if isinstance(agent, torch.nn.Module):
        agent.eval()
    explainers = build_explainers(explainer_names, agent, args)
    states = rollout(agent, game, args.n_states, seed=args.seed, epsilon=args.epsilon, every=args.every,
                     protocol=agent_protocol(agent)).states
    reference = {"reference": args.reference,
                 "background": estimate_background(states) if args.reference == "background" else None}
    metrics = {m: make_metric(m, **_metric_options(m, args, reference)) for m in metric_names}
    actions = greedy_actions(agent, torch.as_tensor(states), args.batch_size)
    store = ScoreStore(
        Path(args.scores) if args.scores else out.with_suffix(".scores.safetensors"),
        fingerprint(game, model_identity(args.agent), args.reference, args.lle_samples, args.seed, args.batch_size,
                    arrays=(states, actions)),
        {name: fingerprint(name, model_identity(args.visionmask) if name == "visionmask" else None) for name in explainers},
    )
    scores = per_state_scores(agent, states, explainers, metrics, actions, args.batch_size, store.known, store.add)
    table = score_table(scores, {m: bool(metric.higher_is_better) for m, metric in metrics.items()}, args.seed,
                        compare_with)
    table.insert(5, "game", game)
    table.insert(6, "agent", str(args.agent))
    table.to_csv(out, index=False)
    out.with_suffix(".json").write_text(json.dumps(table.to_dict(orient="records"), indent=2))
    print(table.to_string(index=False))
    if "random" in explainers:
        print(metric_sanity(table).to_string(index=False))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
