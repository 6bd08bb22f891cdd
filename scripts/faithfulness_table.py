"""Every explainer x every metric on every shipped expert: ``figures/faithfulness.csv``,
``figures/faithfulness.md`` (tables, metric sanity, classic-vs-robust rankings, the model
randomisation test) and one bar figure per game, ``figures/<Game>_faithfulness.png``; the
randomisation test's numbers also in ``figures/randomisation.csv``.

Runs ``xrlkit evaluate-explainers`` and :func:`xrlkit.sanity.randomisation_table` once per game
into ``--work``, then combines the tables. Each game's per-state scores are kept in ``--work``
(``<Game>.scores.safetensors``, :mod:`xrlkit.scores`): an explainer and metric already scored
there on the same states (for VisionMask: with the same checkpoint) is not scored again, so an
interrupted run resumes where it stopped, a new metric is computed alone, and a retrained
VisionMask is scored alone against the stored scores of the others. With ``--games``, only those
games are computed (e.g. a game whose expert or VisionMask was replaced) and every other game's
rows already in ``--out`` are kept as they are.

    .venv/bin/python scripts/faithfulness_table.py --work /tmp/faithfulness
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from xrlkit import plotting  # noqa: E402
from xrlkit.cli import main as xrlkit_main  # noqa: E402
from xrlkit.defaults import shipped, shipped_models  # noqa: E402
from xrlkit.agents.load import agent_protocol, load_any_agent  # noqa: E402
from xrlkit.commands.evaluate_explainers import DEFAULT_EXPLAINERS, build_explainers  # noqa: E402
from xrlkit.evaluation import rollout, spread_every  # noqa: E402
from xrlkit.metrics import METRICS, REFERENCE_METRICS, explainer_ranks, metric_sanity  # noqa: E402
from xrlkit.sanity import PASS_BELOW, randomisation_table  # noqa: E402
from xrlkit.scores import fingerprint, model_identity  # noqa: E402
from xrlkit.tables import rows_of_other_games  # noqa: E402

#: what each metric puts where it removes pixels, reported with every number
REFERENCE_OF = {**dict.fromkeys([*REFERENCE_METRICS, "srg"], "background"),
                **dict.fromkeys(["road_morf", "road_lerf", "road"], "noisy linear imputation")}
CLASSIC_VS_ROBUST = ["deletion", "road_morf", "insertion", "road_lerf", "srg", "road"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the per-game tables (outside the repo)")
    p.add_argument("--out", type=Path, default=Path("figures"), help="where the combined results go")
    p.add_argument("--n-states", type=int, default=64)
    p.add_argument("--every", type=int, default=30, help="keep every k-th step, so states span whole episodes")
    p.add_argument("--seed", type=int, default=2_000_000, help="evaluation seed (never used in training)")
    p.add_argument("--lle-samples", type=int, default=3)
    p.add_argument("--randomisation-states", type=int, default=32, help="states of the model randomisation test")
    p.add_argument("--games", default=None, help="comma-separated games to compute (default: every game with a "
                   "shipped expert); the other games' rows already in --out are kept")
    args = p.parse_args()

    games = args.games.split(",") if args.games else sorted({m["game"] for m in shipped_models() if m["role"] == "expert"})
    tables, randomised = kept_rows(args.out, games) if args.games else ([], [])
    for game in games:
        table_path = args.work / f"{game}.csv"
        has_vm = shipped(game, "visionmask") is not None
        if (rc := evaluate(game, has_vm, args, table_path)) != 0:
            return rc
        tables.append(pd.read_csv(table_path))
        randomised.append(randomisation_rows(game, has_vm, args))
    table = pd.concat(tables, ignore_index=True)
    table = table.sort_values("game", kind="stable", ignore_index=True)
    table["agent"] = table["agent"].map(lambda path: Path(path).name)  # the shipped file, not this machine's path
    table.insert(2, "reference", table["metric"].map(REFERENCE_OF).fillna("none"))
    args.out.mkdir(parents=True, exist_ok=True)
    first = ["game", "explainer", "metric", "reference", "mean", "ci_low", "ci_high", "n_states"]
    out_table = table.rename(columns={"value": "mean"})
    out_table[first + [c for c in out_table if c not in first]].to_csv(args.out / "faithfulness.csv", index=False)
    random_table = pd.concat(randomised, ignore_index=True).sort_values("game", kind="stable", ignore_index=True)
    random_table.to_csv(args.out / "randomisation.csv", index=False)

    lines = [f"# Faithfulness of every explainer on every shipped expert\n",
             f"Last run: `{' '.join(['python', *sys.argv])}`. Each game's heading gives its number of states "
             f"and the stride of its states (games keep the rows of the run that computed them): one state every "
             f"{args.every} steps of play on seed {args.seed}+ (never used in training), a stride with no factor "
             "in common with the length of a world whose episodes all last the same (`xrlkit.evaluation.spread_every`); "
             "classic metrics "
             "with the background reference, ROAD with noisy linear imputation; `*` = better than random "
             "(95% bootstrap interval of the per-state gain above 0).\n"]
    for game, sub in table.groupby("game", sort=False):
        star = sub["value"].round(3).astype(str) + sub["beats_random"].map({True: "*"}).fillna("")
        wide = sub.assign(cell=star).pivot(index="explainer", columns="metric", values="cell")
        wide = wide[[m for m in sub["metric"].unique()]]
        sanity = metric_sanity(sub)
        flagged = sanity[~sanity["separates"]]["metric"].tolist()
        ranks = explainer_ranks(sub, [m for m in CLASSIC_VS_ROBUST if m in set(sub["metric"])])
        rand = random_table[random_table["game"] == game].drop(columns="game").set_index("explainer").round(3)
        n_states = sub["n_states"].iloc[0]
        lines += [f"## {game} ({n_states} states, one every {spread_every(game, args.every)} steps)\n", summary_table(sub, rand), "", "```", wide.to_string(), "```", "",
                  f"Metrics that tell no explainer from random: {', '.join(flagged) or 'none'}.\n",
                  *visionmask_against_each(sub),
                  "Ranks (1 = best), classic beside robust:\n", "```", ranks.to_string(), "```", "",
                  f"Model randomisation test (Spearman correlation of the maps of the trained and a randomly "
                  f"re-initialised agent; passes when the interval's top is below {PASS_BELOW}):\n",
                  "```", rand.to_string(), "```", ""]
        fig = plotting.metric_bars(sub, title=f"{game}: faithfulness of each explainer ({n_states} states)")
        fig.savefig(args.out / f"{game}_faithfulness.png", dpi=100, bbox_inches="tight")
    (args.out / "faithfulness.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'faithfulness.csv'}, {args.out / 'faithfulness.md'} and the figures")
    return 0


#: the summary table's columns: metric -> header (the README's per-game tables are copied from it)
SUMMARY_COLUMNS = {"accuracy": "accuracy ↑", "top_accuracy": "top-10% accuracy ↑", "insertion": "insertion ↑",
                   "deletion": "deletion ↓", "road_morf": "ROAD MoRF ↓", "road_lerf": "ROAD LeRF ↑",
                   "srg": "SRG ↑ (rank)", "road": "ROAD gap ↑ (rank)"}


def summary_table(sub: pd.DataFrame, rand: pd.DataFrame) -> str:
    """One game's explainers as a markdown table, best ROAD gap first: each metric's mean (`·`: its
    per-state gain over random has an interval that includes zero), the ranks by SRG and by ROAD
    gap, and the randomisation test's rank correlation (✗: fails)."""
    mean = sub.pivot(index="explainer", columns="metric", values="value")
    beats = sub.pivot(index="explainer", columns="metric", values="beats_random")
    ranks = explainer_ranks(sub, ["srg", "road"])
    rows = ["| explainer | " + " | ".join(SUMMARY_COLUMNS.values()) + " | randomisation ρ ↓ |",
            "|---" * (len(SUMMARY_COLUMNS) + 2) + "|"]
    for name in mean.sort_values("road", ascending=False).index:
        cells = [f"{mean.loc[name, m]:.3f}" + ("" if name == "random" or bool(beats.loc[name, m]) else " ·")
                 + (f" ({ranks.loc[name, m]})" if m in ranks else "") for m in SUMMARY_COLUMNS]
        rho = f"{rand.loc[name, 'spearman']:.2f}" + ("" if bool(rand.loc[name, "passes"]) else " ✗")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {rho} |")
    return "\n".join(rows)


#: the metrics of the paired VisionMask comparison (the issue's bar: insertion and deletion)
PAIRED_METRICS = ["insertion", "deletion", "srg", "road"]


def visionmask_against_each(sub: pd.DataFrame) -> list[str]:
    """Markdown lines: VisionMask's mean per-state gain over each other explainer on
    :data:`PAIRED_METRICS`, on the same states, with its 95% bootstrap interval (signed so that
    positive means VisionMask is better; ▲ / ▼: the interval lies above / below 0). None
    where the game's rows were computed without the paired comparison (no ``vs_visionmask``)."""
    if "vs_visionmask" not in sub or sub["vs_visionmask"].isna().all():
        return []
    rows = sub[sub["metric"].isin(PAIRED_METRICS) & sub["vs_visionmask"].notna()]
    # vs_visionmask is the other explainer's gain over VisionMask: flip it to read as VisionMask's lead
    cell = rows.apply(lambda r: f"{-r['vs_visionmask']:+.3f} [{-r['vs_visionmask_high']:+.3f}, "
                                f"{-r['vs_visionmask_low']:+.3f}]" + (" ▲" if r["vs_visionmask_high"] < 0 else
                                                                      " ▼" if r["vs_visionmask_low"] > 0 else ""), axis=1)
    wide = rows.assign(cell=cell).pivot(index="explainer", columns="metric", values="cell")
    wide = wide[[m for m in PAIRED_METRICS if m in wide]]
    return ["VisionMask against each explainer, paired on the same states (VisionMask's mean per-state gain, "
            "positive = VisionMask better, 95% interval; ▲ / ▼: VisionMask ahead / behind beyond the interval):\n",
            "```", wide.to_string(), "```", ""]


def kept_rows(out: Path, games: list[str]) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """The faithfulness and randomisation rows of the games not in ``games``, from the tables a
    previous run wrote to ``out``, in the form the per-game tables have (none if there are none)."""
    tables = [old.rename(columns={"mean": "value"}).drop(columns="reference")
              for old in rows_of_other_games(out / "faithfulness.csv", games)]
    return tables, rows_of_other_games(out / "randomisation.csv", games)


def evaluate(game: str, has_vm: bool, args: argparse.Namespace, out: Path) -> int:
    """``xrlkit evaluate-explainers`` of every explainer on the game's shipped expert into the
    table ``out`` (its per-state scores beside it, reused where still valid); its exit code."""
    started = time.perf_counter()
    rc = xrlkit_main([
        "evaluate-explainers", "--game", game, "--agent", "shipped",
        "--explainers", DEFAULT_EXPLAINERS + (",visionmask" if has_vm else ""),
        *(["--visionmask", "shipped"] if has_vm else []), "--metrics", ",".join(METRICS),
        "--reference", "background", "--n-states", str(args.n_states), "--every", str(args.every),
        "--seed", str(args.seed), "--lle-samples", str(args.lle_samples), "--out", str(out),
    ])
    if rc == 0:
        print(f"{game}: {time.perf_counter() - started:.0f} s for {args.n_states} states", flush=True)
    return rc


def randomisation_rows(game: str, has_vm: bool, args: argparse.Namespace) -> pd.DataFrame:
    """The model randomisation test's rows of ``game``: kept in ``--work`` (``<Game>-randomisation.csv``,
    with the fingerprint of its expert and VisionMask files and states in ``<Game>-randomisation.json``)
    and computed again when any of them changed, e.g. after a VisionMask was retrained."""
    path = args.work / f"{game}-randomisation.csv"
    setup_path = path.with_suffix(".json")
    setup = fingerprint(game, model_identity(shipped(game, "expert")),
                        model_identity(shipped(game, "visionmask")) if has_vm else None,
                        args.randomisation_states, args.every, args.seed)
    try:
        stored = json.loads(setup_path.read_text())["setup"] if path.exists() else None
    except (OSError, ValueError, KeyError, TypeError):  # missing or unreadable: compute again
        stored = None
    if stored != setup:
        randomisation(game, has_vm, args).to_csv(path, index=False)
        setup_path.write_text(json.dumps({"setup": setup}))
    return pd.read_csv(path)


def randomisation(game: str, has_vm: bool, args: argparse.Namespace) -> pd.DataFrame:
    """The model randomisation test of every explainer on the game's shipped expert, on
    ``args.randomisation_states`` states of the same evaluation play, explainers built as
    ``evaluate-explainers`` builds them."""
    started = time.perf_counter()
    agent_path = shipped(game, "expert")
    agent = load_any_agent(agent_path, game=game)
    names = DEFAULT_EXPLAINERS.split(",") + (["visionmask"] if has_vm else [])
    options = argparse.Namespace(seed=args.seed, device="cpu", visionmask=shipped(game, "visionmask") if has_vm else None)
    states = rollout(agent, game, args.randomisation_states, seed=args.seed, every=args.every,
                     protocol=agent_protocol(agent)).states
    builders = {name: (lambda a, name=name: build_explainers([name], a, options)[name]) for name in names}
    table = randomisation_table(agent, builders, states, seed=0)
    print(f"{game}: randomisation test, {time.perf_counter() - started:.0f} s for {len(states)} states", flush=True)
    return table.assign(game=game)


if __name__ == "__main__":
    raise SystemExit(main())
