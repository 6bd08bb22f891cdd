#!/usr/bin/env bash
# Train the shipped VisionMask explainer of a shipped expert on a CPU, then pack it into
# xrlkit/data/models (this is the exact recipe of the shipped explainers).
#
#   bash scripts/train_default_visionmask.sh GAME [EPOCHS] [EVERY] [HEAD] [STORED]   e.g. Breakout 15
#
# 2000 states from the game's shipped expert (epsilon 0.05; one state kept every EVERY agent steps,
# default 1, and each episode cut after 400 x EVERY steps, so at most 400 states per episode and a
# larger EVERY reaches later in the game; split by episode into train/val/test), a MobileNet
# DeepLabv3 with a HEAD-wide ASPP head (default 64; narrower for the size budget), the background
# reference, lr 1e-4, early stopping on the validation loss; shipped with its weights stored in
# STORED (float16 by default, or int8).
set -euo pipefail
game=$1
epochs=${2:-15}
every=${3:-1}
head=${4:-64}
stored=${5:-float16}
bin=${XRLKIT_BIN:-.venv/bin}
run=${RUN_DIR:-runs}/vm-$game
"$bin/xrlkit" visionmask collect --agent shipped --game "$game" --n-states 2000 --out "$run/data" \
    --max-episode-steps $((400 * every)) --every "$every" --epsilon 0.05 --seed 0
"$bin/xrlkit" visionmask train --data "$run/data" --agent shipped --out "$run/model" --backbone mobilenet \
    --head-channels "$head" --epochs "$epochs" --reference background --lr 1e-4 --seed 0
command="bash scripts/train_default_visionmask.sh $game $epochs"
[ "$every $head $stored" = "1 64 float16" ] || command="$command $every $head $stored"
"$bin/python" scripts/ship_model.py visionmask "$run/model/best.safetensors" --game "$game" --command "$command" \
    --stored-dtype "$stored"
