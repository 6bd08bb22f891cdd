#!/usr/bin/env bash
# Which reference should a game's VisionMask be trained with? Train one model per reference mode
# (the paper's: background, black, mean, blur) on the same states of the game's shipped expert, score
# each on held-out states of whole episodes beside the game's shipped VisionMask, and write
# figures/visionmask_references_GAME.csv.
#
#   bash scripts/visionmask_reference_sweep.sh GAME [EPOCHS] [EVERY] [HEAD] [REFERENCES]   e.g. Breakout 15 4 32
#
# The states and training recipe are the shipped explainers' (scripts/visionmask_recipe.sh: 2,000
# states, one every EVERY agent steps, MobileNet DeepLabv3 with a HEAD-wide ASPP head, early
# stopping). Each model is scored by the faithfulness table's metrics, always with the background
# reference so that the four are compared on one scale, on 96 states of play on seed 3,000,000+
# (every 30th step): seeds used neither to train the expert nor the VisionMask, nor by
# scripts/faithfulness_table.py (2,000,000+), so the choice is not made on the states that report it.
set -euo pipefail
game=$1
epochs=${2:-15}
every=${3:-4}
head=${4:-32}
references=${5:-background,black,mean,blur}
bin=${XRLKIT_BIN:-.venv/bin}
run=${RUN_DIR:-runs}/vm-sweep-$game
source "$(dirname "$0")/visionmask_recipe.sh"
collect_states "$game" "$every" "$run/data"
models=()  # name=checkpoint: one model per reference, then the game's shipped VisionMask for comparison
for reference in ${references//,/ }; do
    train_visionmask "$run/data" "$run/$reference" "$head" "$epochs" "$reference"
    models+=("$reference=$run/$reference/best.safetensors")
done
for model in "${models[@]}" shipped=shipped; do
    [ -f "$run/${model%%=*}-scores.csv" ] || "$bin/xrlkit" evaluate-explainers --game "$game" --agent shipped \
        --explainers visionmask --visionmask "${model#*=}" --reference background \
        --metrics accuracy,insertion,deletion --n-states 96 --every 30 --seed 3000000 --out "$run/${model%%=*}-scores.csv"
done
"$bin/python" - "$game" "$run" "$references" <<'EOF'
import json, sys
from pathlib import Path

import pandas as pd

game, run, references = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
rows = []
for reference in references:
    scores = pd.read_csv(run / f"{reference}-scores.csv").set_index("metric")
    history = json.loads((run / reference / "history.json").read_text())
    best = min(history, key=lambda h: h["val_total"])
    rows.append({"game": game, "train_reference": reference, "epochs_run": len(history), "best_epoch": best["epoch"],
                 "val_loss": best["val_total"], **{m: scores.loc[m, "value"] for m in ("accuracy", "insertion", "deletion")},
                 "n_states": int(scores["n_states"].iloc[0])})
shipped = pd.read_csv(run / "shipped-scores.csv").set_index("metric")
rows.append({"game": game, "train_reference": "shipped model", **{m: shipped.loc[m, "value"] for m in
             ("accuracy", "insertion", "deletion")}, "n_states": int(shipped["n_states"].iloc[0])})
table = pd.DataFrame(rows)
table["srg"] = table["insertion"] - table["deletion"]  # the ranking used to choose: insertion minus deletion
out = Path("figures") / f"visionmask_references_{game}.csv"
table.to_csv(out, index=False)
print(table.to_string(index=False))
trained = table[table["train_reference"] != "shipped model"]
print(f"best by insertion - deletion: {trained.loc[trained['srg'].idxmax(), 'train_reference']}; wrote {out}")
EOF
