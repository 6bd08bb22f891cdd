#!/usr/bin/env bash
# Distil a game's shipped expert into an IFE student on a CPU, then pack it into
# xrlkit/data/models with role "ife" (the exact recipe of the shipped IFE agents).
#
#   bash scripts/train_default_ife.sh GAME      e.g. Breakout
#
# DAgger, 3 rounds of 15,000 states (round 0: the expert plays; later rounds: the student plays,
# epsilon 0.05), 2 passes over all states per round, IFE encoder + Linear(4096, 256), lr 2.5e-4.
# On a GPU, train IFE agents with RL instead: xrlkit train --algo rainbow --preset fastrainbow --encoder ife
set -euo pipefail
game=$1
bin=${XRLKIT_BIN:-.venv/bin}
run=runs/ife-$game
"$bin/xrlkit" distill --teacher "xrlkit/data/models/$game-ppo-expert.zip" --game "$game" --out "$run" \
    --encoder ife --hidden 256 --rounds 3 --states-per-round 15000 --epochs 2 --eval-episodes 0 --seed 0
"$bin/python" scripts/ship_model.py sb3 "$run/final.zip" --game "$game" --role ife \
    --command "bash scripts/train_default_ife.sh $game"
