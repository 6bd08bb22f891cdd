"""``xrlkit visionmask {collect,train,recalibrate,explain}``: VisionMask datasets, training, batch-norm
statistics and figures."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("visionmask", help="VisionMask: per-action mask explainer (collect / train / explain)")
    sub = parser.add_subparsers(dest="vm_command", required=True, metavar="STEP")

    p = sub.add_parser("collect", help="roll an agent out and store a state dataset (resumable)")
    p.add_argument("--agent", required=True, help="agent checkpoint (.safetensors or SB3 .zip), or 'shipped' for the game's shipped expert")
    p.add_argument("--game", required=True)
    p.add_argument("--n-states", type=int, required=True)
    p.add_argument("--out", required=True, help="dataset directory (re-run to continue)")
    p.add_argument("--epsilon", type=float, default=0.0, help="exploration of the rollout policy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", default=None, help="env protocol; default: the one the agent was trained under")
    p.add_argument("--max-episode-steps", type=int, default=1000, help="agent steps after which an episode is cut")
    p.add_argument("--every", type=int, default=1, help="keep every k-th state, so states span more of each episode")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_collect)

    p = sub.add_parser("train", help="train a VisionMask explainer of a frozen agent (resumes from --out)")
    p.add_argument("--data", required=True, help="dataset directory from 'collect'")
    p.add_argument("--agent", required=True, help="the agent the data was collected from (checkpoint or 'shipped')")
    p.add_argument("--out", required=True)
    p.add_argument("--backbone", choices=("mobilenet", "resnet50"), default="mobilenet")
    p.add_argument("--head-channels", type=int, default=256, help="width of the DeepLabv3 ASPP head (torchvision: 256)")
    p.add_argument("--backbone-weights", choices=("none", "imagenet"), default="none", help="imagenet: from the local torch hub cache only")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--reference", choices=("black", "mean", "blur", "background"), default="black")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--lambda-e", type=float, default=1.0, help="weight of the complement negative entropy")
    p.add_argument("--lambda-area", type=float, default=1.0)
    p.add_argument("--target-area", type=float, default=0.3)
    p.add_argument("--lambda-tv", type=float, default=0.0)
    p.add_argument("--lambda-rank", type=float, default=0.0, help="weight of xrlkit's ranking term (not in the paper; "
                   "asks the top 5-50%% of mask a* to keep / remove the action, as insertion / deletion score it)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--bn-batches", type=int, default=50, help="training batches the batch-norm statistics are "
                   "re-estimated on after each epoch, before validation (0 = keep the running statistics)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast (default: on CUDA and on CPUs with native bf16)")
    p.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (smoke runs)")
    p.add_argument("--init-from", default=None, metavar="VISIONMASK",
                   help="start from this VisionMask's network weights (same game, backbone and head), e.g. the "
                        "explainer of the agent this agent was fine-tuned from")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_train)

    p = sub.add_parser("recalibrate", help="re-estimate a VisionMask's batch-norm statistics on training states "
                       "(what 'train' does after every epoch; for checkpoints made before it did)")
    p.add_argument("--model", required=True, help="VisionMask checkpoint")
    p.add_argument("--data", required=True, help="dataset directory from 'collect' of the same game: statistics from its "
                   "training split, the validation loss before and after on its validation split")
    p.add_argument("--agent", required=True, help="the agent the model explains (checkpoint or 'shipped'), for the validation loss")
    p.add_argument("--out", required=True, help="the new checkpoint (.safetensors)")
    p.add_argument("--batches", type=int, default=50, help="batches of the model's training batch size")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_recalibrate)

    p = sub.add_parser("explain", help="figure: frames and every action's mask")
    p.add_argument("--model", required=True, help="VisionMask checkpoint (e.g. OUT/best.safetensors)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=3, help="number of states (rows)")
    p.add_argument("--seed", type=int, default=0, help="which states are drawn")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_explain)


def _collect(args: argparse.Namespace) -> int:
    from xrlkit.agents.load import agent_protocol, load_any_agent
    from xrlkit.defaults import model_path
    from xrlkit.runlog import claim_out_dir
    from xrlkit.checkpoint import agent_identity
    from xrlkit.visionmask import collect_states

    claim_out_dir(args.out)
    args.agent = model_path(args.agent, args.game, "expert")
    agent = load_any_agent(args.agent, game=args.game, device=args.device)
    out = collect_states(
        agent, args.game, args.n_states, args.out, epsilon=args.epsilon, seed=args.seed,
        protocol=args.protocol or agent_protocol(agent),
        max_episode_steps=args.max_episode_steps, every=args.every, shard_size=args.shard_size, agent_id=agent_identity(agent, args.agent),
    )
    print(f"dataset in {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from xrlkit.agents.load import load_any_agent
    from xrlkit.defaults import model_path
    from xrlkit.runlog import claim_out_dir
    from xrlkit.checkpoint import agent_identity
    from xrlkit.visionmask import StateDataset, TrainConfig, dataset_meta, train_visionmask

    claim_out_dir(args.out)
    if getattr(args, "from_command_line", False):
        from xrlkit.runtime import reexec_with_allocator

        reexec_with_allocator("auto")  # tcmalloc where installed, as for the RL trainers
    game = dataset_meta(args.data)["game"]
    args.agent = model_path(args.agent, game, "expert")
    agent = load_any_agent(args.agent, game=game, device=args.device)
    cfg = TrainConfig(
        backbone=args.backbone, backbone_weights=args.backbone_weights, head_channels=args.head_channels, reference=args.reference, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, lambda_e=args.lambda_e,
        lambda_area=args.lambda_area, target_area=args.target_area, lambda_tv=args.lambda_tv, lambda_rank=args.lambda_rank,
        patience=args.patience, bn_batches=args.bn_batches,
        amp=not args.no_amp, seed=args.seed, max_batches=args.max_batches,
    )
    train = StateDataset(args.data, "train", agent=agent)
    val = StateDataset(args.data, "val", agent=agent)
    _, history = train_visionmask(agent, train, val, args.out, cfg, agent_id=agent_identity(agent, args.agent),
                                  init_from=args.init_from)
    last = history[-1] if history else {}
    print(f"{len(history)} epochs; last: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))
    print(f"best explainer: {Path(args.out) / 'best.safetensors'}")
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from xrlkit.agents.load import load_any_agent
    from xrlkit.defaults import model_path
    from xrlkit.runlog import check_out_file
    from xrlkit.visionmask import StateDataset, evaluate_loss, freeze_agent, load_visionmask
    from xrlkit.visionmask.train import recompute_batchnorm, stored_config

    out = check_out_file(args.out)
    if args.batches < 1:
        raise ValueError(f"--batches must be >= 1, got {args.batches}")
    model = load_visionmask(args.model, device=args.device)
    train, val = StateDataset(args.data, "train"), StateDataset(args.data, "val")
    if train.meta.get("game") != model.game or int(train.meta["n_actions"]) != model.n_actions:
        raise ValueError(f"{args.data} holds {train.meta.get('game')} states ({train.meta['n_actions']} actions); "
                         f"{args.model} explains {model.game} ({model.n_actions} actions)")
    if len(train) < 2:
        raise ValueError(f"{args.data} has {len(train)} training states; batch norm needs at least 2")
    agent = load_any_agent(model_path(args.agent, model.game, "expert"), game=model.game, device=args.device)
    model.check_agent(agent)
    freeze_agent(agent)
    meta = model.checkpoint_meta  # type: ignore[attr-defined]
    cfg = stored_config(meta)
    split, scored = ("validation", val) if len(val) else ("training", train)
    loader = DataLoader(scored, batch_size=cfg.batch_size)
    before = evaluate_loss(model, agent, loader, cfg)["total"]
    recompute_batchnorm(model, train, args.batches, cfg)
    after = evaluate_loss(model, agent, loader, cfg)["total"]
    kept = {k: v for k, v in meta.items() if k not in model.meta()}
    batchnorm = {"data": str(args.data), "collected_from": train.meta.get("agent"), "batches": args.batches,
                 "batch_size": cfg.batch_size, "from": Path(args.model).name, "score_before": before}
    model.save(out, **{**kept, "score": after, "batchnorm_reestimated": batchnorm})
    print(f"batch-norm statistics re-estimated on {min(args.batches * cfg.batch_size, len(train))} training states; "
          f"{split} loss {before:.4f} -> {after:.4f}; written to {out}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xrlkit import plotting
    from xrlkit.runlog import check_out_file
    from xrlkit.visionmask import StateDataset, load_visionmask

    out = check_out_file(args.out)
    model = load_visionmask(args.model, device=args.device)
    data = StateDataset(args.data, args.split, load_frames=True)
    if len(data) == 0:
        raise ValueError(f"split {args.split!r} of {args.data} is empty")
    if int(data.meta["n_actions"]) != model.n_actions:
        raise ValueError(f"{args.model} has {model.n_actions} masks, the data {data.meta['n_actions']} actions")
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(data), size=min(args.n, len(data)), replace=False))
    fig = plotting.mask_rows(data.frames[idx], model.explain(data.states[idx]).cpu(), model.action_meanings,
                             [int(data.actions[i]) for i in idx], row_labels=[plotting.place_label(data.episodes[i], data.steps[i]) for i in idx],
                             suptitle=f"VisionMask per-action masks ({model.game or 'unknown game'}, {model.backbone})")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"figure written to {out}")
    return 0
