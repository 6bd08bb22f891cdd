# The VisionMask training recipe of the shipped explainers, sourced by scripts/train_default_visionmask.sh
# and scripts/visionmask_reference_sweep.sh so that both train on the same states in the same way.
# Expects $bin (the folder holding the xrlkit entry point).

# how many states of the expert's play collect_states keeps when not told
DEFAULT_STATES=2000

# collect_states GAME EVERY OUT [STATES]: STATES (default DEFAULT_STATES) states from the game's shipped expert
# (epsilon 0.05; one state kept every EVERY agent steps, each episode cut after 400 x EVERY steps, so at
# most 400 states per episode and a larger EVERY reaches later in the game; split by episode into
# train/val/test), seed 0.
collect_states() {
    "$bin/xrlkit" visionmask collect --agent shipped --game "$1" --n-states "${4:-$DEFAULT_STATES}" --out "$3" \
        --max-episode-steps $((400 * $2)) --every "$2" --epsilon 0.05 --seed 0
}

# train_visionmask DATA OUT HEAD EPOCHS REFERENCE [RANK]: a MobileNet DeepLabv3 with a HEAD-wide ASPP head
# against the shipped expert, lr 1e-4, seed 0, at most EPOCHS epochs with early stopping on the validation
# loss, the ranking term weighted RANK (default 0: the paper's loss alone).
train_visionmask() {
    "$bin/xrlkit" visionmask train --data "$1" --agent shipped --out "$2" --backbone mobilenet \
        --head-channels "$3" --epochs "$4" --reference "$5" --lambda-rank "${6:-0}" --lr 1e-4 --seed 0
}
