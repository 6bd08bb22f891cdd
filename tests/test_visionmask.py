"""VisionMask: loss terms against direct loops, gradient isolation, training, datasets,
counterfactuals, checkpoints and the CLI (mobilenet backbone, tiny data)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from xrlkit.agents import QAgent, QNetConfig
from xrlkit.checkpoint import save_agent
from xrlkit.defaults import shipped
from xrlkit.visionmask import (
    StateDataset, TrainConfig, VisionMask, collect_states, counterfactual, flip_rates, load_visionmask,
    masked_inputs, train_visionmask, visionmask_loss,
)
from xrlkit.visionmask.loss import ranking_loss, soft_top
from xrlkit.visionmask.train import batch_loss, freeze_agent, recompute_batchnorm

torch.set_num_threads(1)


@pytest.fixture()
def agent(tiny_agent: QAgent) -> QAgent:
    """A private copy of the session's ``tiny_agent`` (training freezes the agent it gets)."""
    return copy.deepcopy(tiny_agent)


# ---------------------------------------------------------------- loss terms vs. plain loops
def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def test_loss_terms_match_direct_computation() -> None:
    rng = np.random.default_rng(0)
    b, k, h, w = 3, 4, 5, 6
    L, Lbar = rng.normal(size=(b, k, k)) * 2, rng.normal(size=(b, k, k)) * 2
    masks = rng.random((b, k, h, w))
    actions = np.array([0, 3, 2])
    lam_e, lam_area, t, lam_tv = 0.7, 1.5, 0.25, 0.4

    row = np.mean([-math.log(_softmax(L[i, actions[i], :])[actions[i]]) for i in range(b)])
    col = np.mean([-math.log(_softmax(L[i, :, actions[i]])[actions[i]]) for i in range(b)])
    neg_rows = np.mean([sum(p * math.log(p) for p in _softmax(Lbar[i, j, :])) for i in range(b) for j in range(k)])
    neg_cols = np.mean([sum(p * math.log(p) for p in _softmax(Lbar[i, :, a])) for i in range(b) for a in range(k)])
    mean_m = masks.sum() / masks.size
    dv = np.mean([abs(masks[i, j, y + 1, x] - masks[i, j, y, x]) for i in range(b) for j in range(k) for y in range(h - 1) for x in range(w)])
    dh = np.mean([abs(masks[i, j, y, x + 1] - masks[i, j, y, x]) for i in range(b) for j in range(k) for y in range(h) for x in range(w - 1)])
    expected = {
        "action": (row + col) / 2,
        "complement": lam_e * (neg_rows + neg_cols) / 2,
        "area": mean_m + lam_area * abs(mean_m - t),
        "tv": lam_tv * (dv + dh),
    }
    expected["total"] = sum(expected.values())

    f = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    got = visionmask_loss(f(L), f(Lbar), f(masks), torch.tensor(actions), lam_e, lam_area, t, lam_tv)
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert float(visionmask_loss(f(L), f(Lbar), f(masks), torch.tensor(actions))["tv"]) == 0.0  # off by default


def test_masked_and_complement_states() -> None:
    s = torch.full((1, 4, 84, 84), 200.0)
    r = torch.full((1, 4, 84, 84), 10.0)
    masks = torch.zeros(1, 2, 84, 84)
    masks[0, 0, :, :42] = 1.0
    masks[0, 1] = 0.25
    keep, drop = masked_inputs(s, masks, r)
    assert keep.shape == drop.shape == (2, 4, 84, 84)
    assert keep[0, :, :, :42].eq(200).all() and keep[0, :, :, 42:].eq(10).all()
    assert drop[0, :, :, :42].eq(10).all() and drop[0, :, :, 42:].eq(200).all()
    assert torch.allclose(keep[1], torch.full_like(keep[1], 0.25 * 200 + 0.75 * 10))
    assert torch.allclose(drop[1], torch.full_like(drop[1], 0.75 * 200 + 0.25 * 10))


def test_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="one mask per action"):
        visionmask_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 8, 8), torch.zeros(2))


# ---------------------------------------------------------------- model, gradients, training
@pytest.fixture(scope="module")
def explainer() -> VisionMask:
    torch.manual_seed(0)
    return VisionMask(4, "mobilenet", action_meanings=("NOOP", "FIRE", "RIGHT", "LEFT"), game="Breakout")


def test_explain_shapes_and_range(explainer: VisionMask, breakout_states: np.ndarray) -> None:
    masks = explainer.explain(breakout_states[:3], actions=np.array([0, 1, 2]))
    assert masks.shape == (3, 4, 84, 84) and masks.dtype == torch.float32
    assert masks.min() >= 0 and masks.max() <= 1
    assert not masks.requires_grad and explainer.name == "visionmask" and explainer.n_actions == 4
    with pytest.raises(ValueError, match=r"\[B, 4, 84, 84\]"):
        explainer.explain(np.zeros((2, 3, 84, 84), np.uint8))


def test_explain_runs_a_folded_copy_that_follows_every_change_of_the_weights(breakout_states: np.ndarray) -> None:
    """explain() computes the masks of forward() in eval mode with an inference copy (batch norms
    folded into the convolutions, channels_last); the copy is rebuilt after an optimizer step and
    after load_state_dict, and the model itself keeps its modules, state_dict and mode."""
    torch.manual_seed(0)
    model = VisionMask(4).train()
    keys = set(model.state_dict())
    states = torch.as_tensor(breakout_states[:4])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    explained = []
    for _ in range(2):
        masks = model.explain(states)
        assert model.training
        with torch.no_grad():
            expected = model.eval()(states)
        model.train()
        torch.testing.assert_close(masks, expected, atol=1e-4, rtol=0)
        explained.append(masks)
        opt.zero_grad()
        model(states).mean().backward()  # moves the weights and the batch norms' running statistics
        opt.step()
    assert (explained[1] - explained[0]).abs().max() > 1e-2  # so the comparison above could fail
    folded = model._inference_net()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) and set(model.state_dict()) == keys

    other = VisionMask(4)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.explain(states), other.eval()(states), atol=1e-4, rtol=0)


def test_gradients_flow_only_into_explainer(agent: QAgent, breakout_states: np.ndarray) -> None:
    agent.train()
    agent_params = freeze_agent(agent)
    assert not agent.training and agent_params and all(not p.requires_grad for p in agent_params)
    model = VisionMask(4).train()
    states = torch.as_tensor(breakout_states[:4])
    terms = batch_loss(model, agent, states, agent.logits(states).argmax(1), TrainConfig())
    terms["action"].backward()  # the agent-dependent term alone: its gradient must pass through the agent
    assert all(p.grad is None for p in agent.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_few_steps_lower_the_loss(agent: QAgent, breakout_states: np.ndarray) -> None:
    torch.manual_seed(0)
    freeze_agent(agent)
    model = VisionMask(4).train()
    states = torch.as_tensor(breakout_states[:8])
    actions = agent.logits(states).argmax(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = batch_loss(model, agent, states, actions, TrainConfig())["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


class _CornerAgent:
    """Two actions; action 0's logit grows with the brightness of the top-left 21 x 21 corner."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, :21, :21].float().mean(dim=(1, 2, 3)) / 255.0
        return torch.stack([20 * (corner - 0.5), torch.zeros_like(corner)], dim=1)


def test_soft_top_keeps_the_top_share() -> None:
    mask = torch.rand(2, 84, 84, generator=torch.Generator().manual_seed(0))
    top = soft_top(mask, 0.1)
    kept = top > 0.5
    assert kept.float().mean().item() == pytest.approx(0.1, abs=0.005)
    for b in range(2):  # the kept pixels are the highest ones
        assert mask[b][kept[b]].min() >= mask[b][~kept[b]].max() - 1e-3
    with pytest.raises(ValueError, match="share"):
        soft_top(mask, 1.0)


def test_ranking_term_prefers_the_mask_that_ranks_the_telling_pixels_first() -> None:
    """A bright state over a black reference: only the top-left corner makes the agent pick 0, so a
    mask whose highest values lie there keeps and removes the action best, one ranking the
    opposite corner first does not; the paper's terms cannot tell these masks apart by area."""
    states = torch.full((3, 4, 84, 84), 255.0)
    reference = torch.zeros_like(states)
    actions = torch.zeros(3, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(84.0), torch.arange(84.0), indexing="ij")
    to_corner = 1 - (yy + xx) / 166  # highest at the top-left
    good = torch.stack([to_corner, 1 - to_corner], 0).expand(3, 2, 84, 84)
    bad = good.flip(1)  # mask of action 0 highest at the bottom-right
    assert good.mean() == pytest.approx(bad.mean().item())
    assert ranking_loss(_CornerAgent(), states, good, reference, actions) < 0.5 * ranking_loss(
        _CornerAgent(), states, bad, reference, actions)


def test_ranking_term_is_off_unless_asked(agent: QAgent, breakout_states: np.ndarray) -> None:
    freeze_agent(agent)
    model = VisionMask(4).train()
    states = torch.as_tensor(breakout_states[:4])
    actions = agent.logits(states).argmax(1)
    torch.manual_seed(0)
    off = batch_loss(model, agent, states, actions, TrainConfig())
    torch.manual_seed(0)
    on = batch_loss(model, agent, states, actions, TrainConfig(lambda_rank=2.0))
    assert off["rank"].item() == 0.0
    assert on["rank"].item() > 0 and on["total"].item() == pytest.approx(off["total"].item() + on["rank"].item(), rel=1e-4)
    on["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_mismatched_action_count_is_a_clear_error(explainer: VisionMask, tmp_path: Path) -> None:
    six = QAgent(6, QNetConfig(encoder="nature"), seed=0).eval()
    with pytest.raises(ValueError, match="4 masks but the agent has 6 actions"):
        explainer.check_agent(six)
    path = explainer.save(tmp_path / "vm.safetensors")
    with pytest.raises(ValueError, match="4 masks but the agent has 6 actions"):
        load_visionmask(path, agent=six)


def test_save_load_round_trip(breakout_states: np.ndarray, tiny_agent: QAgent, tmp_path: Path) -> None:
    bg = torch.as_tensor(breakout_states).float().median(dim=0).values
    model = VisionMask(4, reference_mode="background", background=bg, game="breakout",
                       agent_id={"class": "QAgent", "name": "tiny"}, head_channels=32)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in VisionMask(4).parameters()) / 2
    path = model.save(tmp_path / "vm.safetensors", epoch=3)
    loaded = load_visionmask(path, agent=tiny_agent)
    assert torch.equal(loaded.explain(breakout_states[:2]), model.explain(breakout_states[:2]))
    assert torch.equal(loaded.background, bg)
    assert (loaded.game, loaded.backbone, loaded.reference_mode) == ("Breakout", "mobilenet", "background")
    assert loaded.agent_id == {"class": "QAgent", "name": "tiny"} and loaded.checkpoint_meta["epoch"] == 3
    assert loaded.head_channels == 32
    agent_path = save_agent(tiny_agent, tmp_path / "agent.safetensors", game="Breakout")
    with pytest.raises(ValueError, match="not a VisionMask"):
        load_visionmask(agent_path)


def test_imagenet_weights_never_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not in the torch hub cache"):
        VisionMask(4, "mobilenet", backbone_weights="imagenet")


# ---------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def dataset_dir(tiny_agent: QAgent, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vm-data")
    collect_states(tiny_agent, "Breakout", 60, root, max_episode_steps=6, shard_size=4, progress=False)
    return root


def test_dataset_round_trip_and_splits(dataset_dir: Path, tiny_agent: QAgent) -> None:
    splits = {s: StateDataset(dataset_dir, s, agent=tiny_agent, load_frames=True) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 60
    assert len(splits["train"]) == 48 and len(splits["val"]) == len(splits["test"]) == 6
    index = json.loads((dataset_dir / "index.json").read_text())
    episodes = {s: {e["episode"] for e in index["shards"] if e["split"] == s} for s in splits}
    assert not (episodes["train"] & episodes["val"]) and not (episodes["train"] & episodes["test"])
    d = splits["val"]
    item = d[0]
    assert item["state"].shape == (4, 84, 84) and item["state"].dtype == torch.uint8
    assert item["frame"].shape == (210, 160, 3) and item["logits"].shape == (4,)
    assert item["action"] == int(tiny_agent.logits(item["state"][None]).argmax())
    assert np.array_equal(d.actions, d.logits.argmax(1))
    # where each state was met: its episode (as in the index) and its step, every step kept (every=1)
    for split, data in splits.items():
        assert set(data.episodes.tolist()) == episodes[split]
        for e in episodes[split]:
            assert data.steps[data.episodes == e].tolist() == list(range((data.episodes == e).sum()))


def test_collection_resumes(tiny_agent: QAgent, tmp_path: Path) -> None:
    collect_states(tiny_agent, "Breakout", 10, tmp_path, max_episode_steps=4, shard_size=3, progress=False)
    before = json.loads((tmp_path / "index.json").read_text())["shards"]
    collect_states(tiny_agent, "Breakout", 14, tmp_path, max_episode_steps=4, shard_size=3, progress=False)
    after = json.loads((tmp_path / "index.json").read_text())["shards"]
    assert after[: len(before)] == before and sum(e["n"] for e in after) == 14
    assert max(e["episode"] for e in after) == max(e["episode"] for e in before) + 1
    with pytest.raises(ValueError, match="other settings"):
        collect_states(tiny_agent, "Breakout", 20, tmp_path, max_episode_steps=5, shard_size=3, progress=False)


def test_every_keeps_every_kth_state_of_longer_episodes(tiny_agent: QAgent, tmp_path: Path) -> None:
    collect_states(tiny_agent, "Breakout", 12, tmp_path, max_episode_steps=9, every=3, shard_size=5, progress=False)
    index = json.loads((tmp_path / "index.json").read_text())
    steps = np.concatenate([np.load(tmp_path / e["file"])["step"] for e in index["shards"]])
    assert len(steps) == 12 and set(steps.tolist()) == {0, 3, 6}  # 3 kept states from each 9-step episode
    assert len({e["episode"] for e in index["shards"]}) == 4
    with pytest.raises(ValueError, match="other settings"):  # a dataset keeps one spacing
        collect_states(tiny_agent, "Breakout", 20, tmp_path, max_episode_steps=9, every=2, shard_size=5, progress=False)


def test_collect_command_takes_the_shipped_expert(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from xrlkit.cli import main
    from xrlkit.visionmask import dataset_meta

    out = tmp_path / "data"
    assert main(["visionmask", "collect", "--agent", "shipped", "--game", "Breakout", "--n-states", "4",
                 "--max-episode-steps", "8", "--every", "2", "--out", str(out)]) == 0
    assert Path(dataset_meta(out)["agent"]["path"]).name == shipped("Breakout", "expert").name
    assert main(["visionmask", "collect", "--agent", "shipped", "--game", "Asterix", "--n-states", "4",
                 "--out", str(tmp_path / "none")]) == 2
    assert "ships no expert model for Asterix" in capsys.readouterr().err


def test_a_folder_without_data_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no meta.json.*visionmask collect.*notebook 3"):
        StateDataset(tmp_path, "test")


def test_corrupted_or_tampered_data_fails_clearly(dataset_dir: Path, tiny_agent: QAgent, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(dataset_dir, root)
    index = json.loads((root / "index.json").read_text())
    entry = next(e for e in index["shards"] if e["split"] == "train")
    shard = root / entry["file"]
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["actions"] = (arrays["actions"] + 1) % 4  # wrong actions, but a consistent file and hash
    np.savez_compressed(shard, **arrays)
    from xrlkit.checkpoint import file_sha256

    entry["sha256"] = file_sha256(shard)
    (root / "index.json").write_text(json.dumps(index))
    StateDataset(root, "train")  # readable ...
    with pytest.raises(ValueError, match="recomputed action differs"):
        StateDataset(root, "train", agent=tiny_agent)  # ... but not the agent's actions
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        StateDataset(root, "train")


def test_train_writes_checkpoints_and_resumes(dataset_dir: Path, agent: QAgent, tmp_path: Path) -> None:
    train, val = StateDataset(dataset_dir, "train"), StateDataset(dataset_dir, "val")
    cfg = TrainConfig(epochs=2, batch_size=4, max_batches=2, lr=1e-4, reference="background")
    model, history = train_visionmask(agent, train, val, tmp_path, cfg, progress=False)
    assert [h["epoch"] for h in history] == [1, 2] and {"train_total", "val_total", "val_action"} <= set(history[0])
    for name in ("best.safetensors", "last.safetensors", "last-trainer.safetensors", "history.json"):
        assert (tmp_path / name).is_file()
    assert model.reference_mode == "background" and model.background.shape == (4, 84, 84)
    cfg.epochs, cfg.patience = 3, 7  # the stopping rule may change on resume
    _, history3 = train_visionmask(agent, train, val, tmp_path, cfg, progress=False)
    assert [h["epoch"] for h in history3] == [1, 2, 3] and history3[:2] == history
    with pytest.raises(ValueError, match="other settings"):
        train_visionmask(agent, train, val, tmp_path, TrainConfig(epochs=4, batch_size=8), progress=False)


def test_batchnorm_statistics_are_re_estimated_on_training_states(dataset_dir: Path, tiny_agent: QAgent) -> None:
    """Re-estimated on the whole split as one batch, every batch norm holds that batch's
    per-channel mean and (unbiased) variance of its input, and the model stays in eval mode."""
    train = StateDataset(dataset_dir, "train")
    torch.manual_seed(0)
    model = VisionMask(tiny_agent.n_actions, head_channels=16).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.running_mean.add_(3.0)  # stale statistics
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _, x: inputs.append(x[0].detach().clone())) for m in norms]
    recompute_batchnorm(model, train, 1, TrainConfig(batch_size=len(train), amp=False))
    for h in hooks:
        h.remove()
    assert not model.training and len(inputs) == len(norms)
    for m, x in zip(norms, inputs):
        torch.testing.assert_close(m.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var, x.transpose(0, 1).flatten(1).var(dim=1), rtol=1e-3, atol=1e-5)


def test_init_from_starts_from_another_explainers_weights(dataset_dir: Path, agent: QAgent, tmp_path: Path) -> None:
    """A run started from a VisionMask (with a near-zero learning rate) keeps its weights, records
    the file, and a resume must name the same file; one with another head width is refused."""
    from xrlkit.checkpoint import file_sha256

    train, val = StateDataset(dataset_dir, "train"), StateDataset(dataset_dir, "val")
    small = dict(epochs=1, batch_size=4, max_batches=2, reference="background", head_channels=16)
    train_visionmask(agent, train, val, tmp_path / "parent", TrainConfig(**small, lr=1e-3), progress=False)
    parent = tmp_path / "parent" / "best.safetensors"
    still = TrainConfig(**small, lr=1e-12, weight_decay=0.0)
    child, _ = train_visionmask(agent, train, val, tmp_path / "child", still, progress=False, init_from=parent)
    fresh, _ = train_visionmask(agent, train, val, tmp_path / "fresh", still, progress=False)
    before = dict(load_visionmask(parent).net.named_parameters())
    assert all(torch.allclose(p, before[n], atol=1e-6) for n, p in child.net.named_parameters())
    assert not all(torch.allclose(p, before[n], atol=1e-6) for n, p in fresh.net.named_parameters())
    assert child.checkpoint_meta["init_from"] == {"file": "best.safetensors", "sha256": file_sha256(parent)}
    with pytest.raises(ValueError, match="other settings"):
        train_visionmask(agent, train, val, tmp_path / "fresh", still, progress=False, init_from=parent)
    with pytest.raises(ValueError, match="head channels 16, not 32"):
        train_visionmask(agent, train, val, tmp_path / "wide", TrainConfig(**{**small, "head_channels": 32}),
                         progress=False, init_from=parent)


# ---------------------------------------------------------------- counterfactuals
class BandAgent:
    """Hand-made agent: logit of action a = mean of vertical band a (28 px wide) of the last frame."""

    n_actions = 3
    action_meanings = ("LEFT_BAND", "MIDDLE_BAND", "RIGHT_BAND")
    device = torch.device("cpu")

    def logits(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(obs).float()[:, -1]
        return torch.stack([x[:, :, 28 * a : 28 * (a + 1)].mean(dim=(1, 2)) for a in range(3)], dim=1) / 10

    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float = 0.0) -> np.ndarray:
        return self.logits(obs).argmax(1).numpy()


class FixedMasks:
    """Hand-made explainer: the same masks ``[K, 84, 84]`` for every state."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def explain(self, states: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.masks.expand(len(states), -1, -1, -1)


def _band_states() -> torch.Tensor:
    s = torch.zeros(2, 4, 84, 84)
    for i, values in enumerate([(200, 100, 50), (30, 90, 60)]):
        for a, v in enumerate(values):
            s[i, :, :, 28 * a : 28 * (a + 1)] = v
    return s


def test_counterfactual_flip_rates_on_a_known_agent() -> None:
    bands = torch.zeros(3, 84, 84)
    for a in range(3):
        bands[a, :, 28 * a : 28 * (a + 1)] = 1
    agent, states = BandAgent(), _band_states()
    good, inverted = FixedMasks(bands), FixedMasks(1 - bands)

    cf = counterfactual(agent, good, states, np.array([1, 2]))
    assert cf.action.tolist() == [0, 1]
    assert cf.action_keep_alt.tolist() == [1, 2] and cf.flipped_to_alt.all()
    assert cf.action_remove_action.tolist() == [1, 2] and cf.flipped_away.all()
    assert cf.probs_keep_alt[0, 1] == pytest.approx(float(torch.softmax(torch.tensor([0.0, 10.0, 0.0]), 0)[1]))

    assert flip_rates(agent, good, states) == {"to_alt": 1.0, "away": 1.0, "n_states": 2.0, "n_pairs": 4.0}
    assert flip_rates(agent, inverted, states) == {"to_alt": 0.0, "away": 0.0, "n_states": 2.0, "n_pairs": 4.0}
    # the reference matters: with the frame-mean reference (350/3 = 116.7) the removed band 0 of
    # state 0 still beats band 1 (100), so its action does not flip
    cf = counterfactual(agent, good, states[:1], np.array([1]), reference="mean")
    assert cf.action_remove_action.tolist() == [0] and not cf.flipped_away.any()


def test_counterfactual_chart_shows_the_removal_its_title_names(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from xrlkit import plotting

    bands = torch.zeros(3, 84, 84)
    for a in range(3):
        bands[a, :, 28 * a : 28 * (a + 1)] = 1
    agent, states = BandAgent(), _band_states()
    s = torch.as_tensor(states[:1]).repeat(3, 1, 1, 1)
    cf = counterfactual(agent, FixedMasks(bands), s, torch.arange(3))
    fig = plotting.counterfactual_chart(cf, ["A", "B", "C"], states[0], bands[0])
    ax = fig.axes[1]
    removed = [b for b in ax.patches if b.get_facecolor()[:3] == matplotlib.colors.to_rgb("tab:red")]
    np.testing.assert_allclose([b.get_height() for b in removed], cf.probs_remove_action[0], rtol=1e-6)
    assert "m[A] removed the agent now picks B (red)" in ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    assert labels[:2] == ["original state", "m[A] removed"] and labels[2:] == [f"only m[{k}] kept" for k in "ABC"]
    fig.savefig(tmp_path / "cf.png")


# ---------------------------------------------------------------- CLI
def test_cli_collect_train_recalibrate_explain(tiny_agent: QAgent, tmp_path: Path) -> None:
    from xrlkit.cli import main

    agent_path = save_agent(tiny_agent, tmp_path / "agent.safetensors", game="Breakout")
    data, out, png = tmp_path / "data", tmp_path / "vm", tmp_path / "fig.png"
    assert main(["visionmask", "collect", "--agent", str(agent_path), "--game", "Breakout", "--n-states", "24",
                 "--out", str(data), "--max-episode-steps", "4"]) == 0
    assert main(["visionmask", "train", "--data", str(data), "--agent", str(agent_path), "--out", str(out),
                 "--epochs", "1", "--batch-size", "4", "--max-batches", "1", "--head-channels", "16"]) == 0
    meta = load_visionmask(out / "best.safetensors").checkpoint_meta
    assert meta["head_channels"] == 16 and meta["game"] == "Breakout" and meta["agent"]["path"] == str(agent_path) and len(meta["agent"]["sha256"]) == 64
    assert main(["visionmask", "explain", "--model", str(out / "best.safetensors"), "--data", str(data),
                 "--out", str(png), "--n", "2"]) == 0
    assert png.stat().st_size > 0
    recal = tmp_path / "recal.safetensors"
    assert main(["visionmask", "recalibrate", "--model", str(out / "best.safetensors"), "--data", str(data),
                 "--agent", str(agent_path), "--out", str(recal), "--batches", "3"]) == 0
    before, after = load_visionmask(out / "best.safetensors"), load_visionmask(recal)
    assert after.checkpoint_meta["batchnorm_reestimated"]["batches"] == 3 and after.checkpoint_meta["epoch"] == 1
    assert after.checkpoint_meta["batchnorm_reestimated"]["score_before"] == before.checkpoint_meta["score"]
    stats = [n for n, _ in before.net.named_buffers() if n.endswith("running_mean")]
    assert not all(torch.equal(before.net.get_buffer(n), after.net.get_buffer(n)) for n in stats)
    assert main(["visionmask", "recalibrate", "--model", str(recal), "--data", str(data), "--agent", str(agent_path),
                 "--out", str(tmp_path), "--batches", "3"]) == 2  # a folder, not a file
    bad = save_agent(QAgent(6, QNetConfig(encoder="nature"), seed=0), tmp_path / "six.safetensors", game="Breakout")
    assert main(["visionmask", "recalibrate", "--model", str(recal), "--data", str(data), "--agent", str(bad),
                 "--out", str(tmp_path / "r2.safetensors")]) == 2  # another action count
    assert main(["visionmask", "train", "--data", str(data), "--agent", str(bad), "--out", str(tmp_path / "x")]) == 2
