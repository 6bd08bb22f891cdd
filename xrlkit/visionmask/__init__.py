"""VisionMask (arXiv 2411.16120): contrastive learning of per-action masks that
explain an RL agent's actions. Collect states (:mod:`.data`), train the explainer against the
frozen agent (:mod:`.train`, loss in :mod:`.loss`), explain and test counterfactuals
(:mod:`.counterfactual`)."""

from xrlkit.visionmask.counterfactual import Counterfactual, counterfactual, flip_rates
from xrlkit.visionmask.data import SPLITS, StateDataset, check_actions, collect_states, dataset_meta
from xrlkit.visionmask.loss import mask_logits, masked_inputs, neg_entropy, total_variation, visionmask_loss
from xrlkit.visionmask.model import BACKBONES, VisionMask, build_segmenter, load_visionmask
from xrlkit.visionmask.train import TrainConfig, evaluate_loss, freeze_agent, train_visionmask

__all__ = [
    "Counterfactual", "counterfactual", "flip_rates", "SPLITS", "StateDataset", "check_actions", "collect_states",
    "dataset_meta", "mask_logits", "masked_inputs", "neg_entropy", "total_variation", "visionmask_loss",
    "BACKBONES", "VisionMask", "build_segmenter", "load_visionmask", "TrainConfig",
    "evaluate_loss", "freeze_agent", "train_visionmask",
]
