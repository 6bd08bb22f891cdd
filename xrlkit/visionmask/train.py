"""Training a VisionMask explainer against a frozen agent.

Adam (lr 1e-5, weight decay 0.01 by default, as the paper / official code), batch 16, the loss of
:mod:`xrlkit.visionmask.loss`. The agent is frozen (``requires_grad_(False)``, eval mode) and the
first step checks that gradients reached the explainer and nothing else.

Each epoch ends by re-estimating every batch norm's running mean and variance as a plain average
over ``bn_batches`` training batches (:func:`recompute_batchnorm`), then a validation pass;
``out_dir`` then holds

* ``last.safetensors``: the explainer after the latest epoch (a normal VisionMask checkpoint),
* ``last-trainer.safetensors``: optimizer state, epoch, best validation loss, history (resume),
* ``best.safetensors``: the explainer with the lowest validation loss so far,
* ``history.json``: one dict per epoch (mean train / val loss terms, time, states/s).

Training stops early after ``patience`` epochs without a better validation loss (the training
loss is used when there is no validation split). Calling :func:`train_visionmask` again on the
same ``out_dir`` with the same settings resumes after the last finished epoch; only the stopping rule
(``epochs``, ``patience``) may change, e.g. to carry on a run that early stopping ended on a noisy
validation curve. ``init_from`` starts the network from another VisionMask's weights (same game,
actions, backbone and head; the reference image is this run's), e.g. the explainer of the agent that
this agent was fine-tuned from: masks for a slightly changed policy need a few epochs, not a whole
training. With ``amp`` the forward passes run under bfloat16 autocast where that is fast: on CUDA,
and on a CPU with native bf16 (:func:`xrlkit.runtime.bf16_native`; elsewhere bf16 on a CPU is many
times slower, so it stays off). On CUDA larger batches are worth setting.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xrlkit.checkpoint import file_sha256, load_tensors, optimizer_tensors, restore_optimizer, save_tensors
from xrlkit.references import estimate_background
from xrlkit.runtime import bf16_native
from xrlkit.visionmask.data import StateDataset
from xrlkit.visionmask.loss import mask_logits, ranking_loss, visionmask_loss
from xrlkit.visionmask.model import VisionMask, load_visionmask

TERMS = ("action", "complement", "area", "tv", "rank", "total")


@dataclass
class TrainConfig:
    """Trainer settings (stored in checkpoints; a resume must use the same ones, ``epochs`` aside)."""

    backbone: str = "mobilenet"
    backbone_weights: str = "none"
    head_channels: int = 256  # ASPP width; the shipped explainers use 64 (size budget)
    reference: str = "black"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-5
    weight_decay: float = 0.01
    lambda_e: float = 1.0
    lambda_area: float = 1.0
    target_area: float = 0.3
    lambda_tv: float = 0.0
    lambda_rank: float = 0.0  # the ranking term of xrlkit.visionmask.loss (not in the paper)
    patience: int = 3
    bn_batches: int = 50  # training batches the batch-norm statistics are re-estimated on each epoch; 0 = off
    amp: bool = True
    seed: int = 0
    max_batches: int | None = None  # per epoch and split, and of the batch-norm pass; None = all (for smoke runs)


def freeze_agent(agent: Any) -> list[nn.Parameter]:
    """Put ``agent`` in eval mode with ``requires_grad`` off and stale gradients dropped; its
    parameters (maybe none, for agents that are not torch modules)."""
    params = list(agent.parameters()) if hasattr(agent, "parameters") else []
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    if hasattr(agent, "eval"):
        agent.eval()
    return params


def check_gradient_flow(model: nn.Module, agent_params: list[nn.Parameter]) -> None:
    """Raise ``RuntimeError`` unless the explainer got gradients and the agent none."""
    if any(p.grad is not None for p in agent_params):
        raise RuntimeError("gradients reached the agent's parameters; the agent must stay frozen")
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()):
        raise RuntimeError("no gradient reached the explainer")


def amp_enabled(amp: bool, device: torch.device) -> bool:
    """Whether bfloat16 autocast runs: asked for, and on CUDA or on a CPU with native bf16."""
    return amp and (device.type == "cuda" or (device.type == "cpu" and bf16_native()))


def forward_autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """The autocast of the trainer's forward passes on ``device``: bfloat16 where
    :func:`amp_enabled`, else off."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_enabled(cfg.amp, device))


def stored_config(meta: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` a VisionMask checkpoint's metadata records (``train_config``, written
    by :func:`train_visionmask`); settings this version does not know are dropped, missing ones
    take their defaults."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in meta.get("train_config", {}).items() if k in names})


def batch_loss(model: VisionMask, agent: Any, states: torch.Tensor, actions: torch.Tensor, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Loss terms of one batch ``states uint8 [B, 4, 84, 84]``, ``actions int64 [B]``."""
    with forward_autocast(cfg, states.device):
        masks = model(states)
        reference = model.reference(states)
        logits, logits_bar = mask_logits(agent, states, masks, reference)
        rank = cfg.lambda_rank * ranking_loss(agent, states, masks, reference, actions) if cfg.lambda_rank else None
    return visionmask_loss(
        logits, logits_bar, masks.float(), actions, cfg.lambda_e, cfg.lambda_area, cfg.target_area, cfg.lambda_tv, rank
    )


def recompute_batchnorm(model: VisionMask, data: StateDataset, batches: int, cfg: TrainConfig) -> None:
    """Re-estimate the running mean and variance of every batch norm of ``model`` as a plain
    average over ``batches`` shuffled batches of ``cfg.batch_size`` states of ``data``
    (:func:`torch.optim.swa_utils.update_bn`, under the training autocast). ``model`` keeps its mode.

    Why: torchvision's MobileNetV3 batch norms keep running statistics with momentum 0.01, an
    average over the last ~100 steps, which lags the weights while they change. On Breakout
    (warm start, lr 1e-4) the eval-mode masks of validation states then covered 0.80 of the
    screen where the train-mode ones covered 0.30, and the validation loss jumped between 0.08
    and 1.1 from epoch to epoch; with re-estimated statistics the same checkpoint scored -0.08.
    """
    if batches < 1:
        return
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                        drop_last=len(data) > cfg.batch_size)
    states = (b["state"] for b, _ in zip(loader, range(batches)))
    with forward_autocast(cfg, model.device):
        update_bn(states, model, model.device)


def _fixed_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the stopping rule (``epochs``, ``patience``), which a resumed run may change."""
    return {k: v for k, v in settings.items() if k not in ("epochs", "patience")}


def train_visionmask(
    agent: Any,
    train_data: StateDataset,
    val_data: StateDataset | None,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    agent_id: dict[str, Any] | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> tuple[VisionMask, list[dict[str, Any]]]:
    """Train (or resume) a VisionMask explainer of ``agent`` on ``train_data``.

    Runs on ``agent.device``. Returns the explainer with the best weights (eval mode) and the
    history (one dict per epoch), also written to ``out_dir/history.json``. ``init_from``: a
    VisionMask checkpoint whose network weights the run starts from (``ValueError`` if its game,
    action count, backbone or head width differ); its file name and SHA-256 go into the settings
    (a resume must name the same file) and into every checkpoint's metadata.
    """
    cfg = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(agent.device)
    if len(train_data) < 2:
        raise ValueError(f"need at least 2 training states, got {len(train_data)}")
    if int(train_data.meta["n_actions"]) != int(agent.n_actions):
        raise ValueError(f"the data was collected for {train_data.meta['n_actions']} actions, the agent has {agent.n_actions}")
    agent_params = freeze_agent(agent)
    torch.manual_seed(cfg.seed)
    background = estimate_background(train_data.states) if cfg.reference == "background" else None
    model = VisionMask(
        agent.n_actions, cfg.backbone, cfg.backbone_weights, cfg.reference, background,
        tuple(agent.action_meanings), train_data.meta.get("game"), agent_id or train_data.meta.get("agent"),
        cfg.head_channels,
    ).to(device)
    parent_id = None
    if init_from is not None:
        parent = load_visionmask(init_from)
        must_match = {"game": "game", "actions": "n_actions", "backbone": "backbone", "head channels": "head_channels"}
        diff = [f"{name} {getattr(parent, a)!r}, not {getattr(model, a)!r}" for name, a in must_match.items()
                if getattr(parent, a) != getattr(model, a)]
        if diff:
            raise ValueError(f"--init-from {init_from} has {'; '.join(diff)}; it cannot start this run")
        model.net.load_state_dict(parent.net.state_dict())
        parent_id = {"file": Path(init_from).name, "sha256": file_sha256(init_from)}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    settings = _fixed_settings(asdict(cfg))
    if parent_id:
        settings["init_from"] = parent_id

    history: list[dict[str, Any]] = []
    best, bad_epochs, start = float("inf"), 0, 0
    trainer_path = out / "last-trainer.safetensors"
    if trainer_path.exists():
        opt_tensors, tmeta = load_tensors(trainer_path)
        if _fixed_settings(tmeta.get("settings", {})) != settings:
            raise ValueError(f"{out} holds a run with other settings; use a new out_dir to start over")
        model.load_state_dict(load_visionmask(out / "last.safetensors").state_dict())
        restore_optimizer(opt, {k: v.to(device) for k, v in opt_tensors.items()})
        history, best, bad_epochs, start = tmeta["history"], tmeta["best"], tmeta["bad_epochs"], tmeta["epoch"]

    gen = torch.Generator().manual_seed(cfg.seed + start)
    loader = DataLoader(
        train_data, batch_size=cfg.batch_size, shuffle=True, generator=gen,
        drop_last=len(train_data) > cfg.batch_size, pin_memory=device.type == "cuda",
    )
    val_loader = DataLoader(val_data, batch_size=cfg.batch_size) if val_data is not None and len(val_data) else None
    checked = False
    for epoch in range(start, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        t0 = time.perf_counter()
        model.train()
        sums, n_seen = dict.fromkeys(TERMS, 0.0), 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for i, batch in enumerate(bar):
            if cfg.max_batches is not None and i >= cfg.max_batches:
                break
            states = batch["state"].to(device, non_blocking=True)
            if len(states) < 2:  # BatchNorm in train mode needs two samples
                continue
            terms = batch_loss(model, agent, states, batch["action"].to(device), cfg)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            if not checked:
                check_gradient_flow(model, agent_params)
                checked = True
            opt.step()
            for k in TERMS:
                sums[k] += terms[k].item() * len(states)
            n_seen += len(states)
            bar.set_postfix(loss=f"{terms['total'].item():.4f}")
        train_time = time.perf_counter() - t0
        recompute_batchnorm(model, train_data, min(cfg.bn_batches, cfg.max_batches or cfg.bn_batches), cfg)
        record: dict[str, Any] = {"epoch": epoch + 1, **{f"train_{k}": sums[k] / max(n_seen, 1) for k in TERMS}}
        if val_loader is not None:
            record.update({f"val_{k}": v for k, v in evaluate_loss(model, agent, val_loader, cfg).items()})
        record.update(seconds=time.perf_counter() - t0, train_states_per_s=n_seen / train_time)
        history.append(record)
        score = record.get("val_total", record["train_total"])
        improved = score < best
        best, bad_epochs = (score, 0) if improved else (best, bad_epochs + 1)
        extra = {"epoch": epoch + 1, "score": score, "train_config": asdict(cfg), "init_from": parent_id}
        model.save(out / "last.safetensors", **extra)
        if improved:
            model.save(out / "best.safetensors", **extra)
        save_tensors(trainer_path, optimizer_tensors(opt), {
            "kind": "visionmask-trainer", "settings": settings, "history": history, "best": best,
            "bad_epochs": bad_epochs, "epoch": epoch + 1,
        })
        (out / "history.json").write_text(json.dumps(history, indent=1))
    best_model = load_visionmask(out / "best.safetensors", agent, device)
    return best_model, history


@torch.no_grad()
def evaluate_loss(model: VisionMask, agent: Any, loader: DataLoader, cfg: TrainConfig) -> dict[str, float]:
    """Mean loss terms over ``loader`` (eval mode, no grad)."""
    model.eval()
    sums, n = dict.fromkeys(TERMS, 0.0), 0
    for i, batch in enumerate(loader):
        if cfg.max_batches is not None and i >= cfg.max_batches:
            break
        states = batch["state"].to(model.device)
        terms = batch_loss(model, agent, states, batch["action"].to(model.device), cfg)
        for k in TERMS:
            sums[k] += terms[k].item() * len(states)
        n += len(states)
    return {k: v / max(n, 1) for k, v in sums.items()}
