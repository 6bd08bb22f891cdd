#!/usr/bin/env bash
# Train the shipped VisionMask explainer of a shipped expert on a CPU, then pack it into
# xrlkit/data/models (this is the exact recipe of the shipped explainers).
#
#   bash scripts/train_default_visionmask.sh GAME [EPOCHS] [EVERY] [HEAD] [STORED] [STATES] [RANK]   e.g. Breakout 15
#
# The recipe of scripts/visionmask_recipe.sh: STATES (default DEFAULT_STATES, 2000) states from the game's shipped expert, one kept
# every EVERY agent steps (default 1), a MobileNet DeepLabv3 with a HEAD-wide ASPP head (default 64;
# narrower for the size budget), the background reference, early stopping on the validation loss;
# shipped with its weights stored in STORED (float16 by default, or int8); RANK (default 0) weights the
# ranking term of xrlkit.visionmask.loss, which is not in the paper.
set -euo pipefail
game=$1
epochs=${2:-15}
every=${3:-1}
head=${4:-64}
stored=${5:-float16}
bin=${XRLKIT_BIN:-.venv/bin}
run=${RUN_DIR:-runs}/vm-$game
source "$(dirname "$0")/visionmask_recipe.sh"
states=${6:-$DEFAULT_STATES}
rank=${7:-0}
collect_states "$game" "$every" "$run/data" "$states"
train_visionmask "$run/data" "$run/model" "$head" "$epochs" background "$rank"
command="bash scripts/train_default_visionmask.sh $game $epochs"
[ "$every $head $stored $states $rank" = "1 64 float16 $DEFAULT_STATES 0" ] || command="$command $every $head $stored"
[ "$states $rank" = "$DEFAULT_STATES 0" ] || command="$command $states"
[ "$rank" = 0 ] || command="$command $rank"
"$bin/python" scripts/ship_model.py visionmask "$run/model/best.safetensors" --game "$game" --command "$command" \
    --stored-dtype "$stored"
