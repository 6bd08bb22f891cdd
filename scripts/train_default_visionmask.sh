#!/usr/bin/env bash
# Train the shipped VisionMask explainer of a shipped expert on a CPU, then pack it into
# xrlkit/data/models (this is the exact recipe of the shipped explainers).
#
#   bash scripts/train_default_visionmask.sh GAME [EPOCHS]      e.g. Breakout 15
#
# 2000 states from the game's shipped expert (epsilon 0.05, episodes cut at 400 steps, split by
# episode into train/val/test), a MobileNet DeepLabv3 with a 64-wide ASPP head (size budget),
# the background reference, lr 1e-4, early stopping on the validation loss.
set -euo pipefail
game=$1
epochs=${2:-15}
bin=${XRLKIT_BIN:-.venv/bin}
agent=xrlkit/data/models/$game-ppo-expert.zip
run=runs/vm-$game
"$bin/xrlkit" visionmask collect --agent "$agent" --game "$game" --n-states 2000 --out "$run/data" \
    --max-episode-steps 400 --epsilon 0.05 --seed 0
"$bin/xrlkit" visionmask train --data "$run/data" --agent "$agent" --out "$run/model" --backbone mobilenet \
    --head-channels 64 --epochs "$epochs" --reference background --lr 1e-4 --seed 0
"$bin/python" scripts/ship_model.py visionmask "$run/model/best.safetensors" --game "$game" \
    --command "bash scripts/train_default_visionmask.sh $game $epochs"
