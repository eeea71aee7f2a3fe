#!/usr/bin/env bash
# The paper's open questions as one command: GRPO over a grid of the format-reward weight λ
# (reward_weights [1, λ]), the accuracy normalisation constant (accuracy_scale) and a frozen or
# trainable vision tower (freeze_vision_tower). Each run predicts the unseen split and gets a bias
# report; one table ($SWEEP_OUT/table.md, value ± half-width of the 95 % interval on the 0.0-9.9
# scale, † where a run differs significantly from the first configuration, the reference).
#   bash scripts/sweep.sh BUILD RECIPE.yaml [urp-train flags for every run...]
# e.g. on the demo, from one command: bash scripts/sweep_demo.sh (CPU, minutes; it starts from the demo's
# warm start, made when missing, and shows the wiring, not an answer).
# 7B (GPUs, not run here; the full grid is 8 GRPO runs of the paper's recipe):
#   SWEEP_PREDICT="" PAPER_LAUNCH="accelerate launch --config_file configs/accelerate/zero3.yaml -m urp_train.cli" \
#     bash scripts/sweep.sh build/global configs/train/qwen2_5_vl_7b.yaml
# Grid: $SWEEP_LAMBDAS (default "0.5 1.0"), $SWEEP_SCALES ("5.0 2.5"), $SWEEP_FREEZE ("false true");
# the first value of each makes the reference row. $SWEEP_PREDICT holds extra `urp-eval predict`
# flags (default a CPU-sized slice, "--max-samples 16 --max-new-tokens 16").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: scripts/sweep.sh BUILD RECIPE.yaml [urp-train flags...]" >&2
  exit 2
fi
BUILD=$1; RECIPE=$2; shift 2
for f in "$RECIPE" "$BUILD/manifest.json"; do
  [ -f "$f" ] || { echo "sweep.sh: error: $f not found" >&2; exit 2; }
done
bash scripts/warmstart_demo.sh sweep.sh "$RECIPE" "$BUILD" "" "$@" >/dev/null  # the base, made when the demo's is missing
OUT=${SWEEP_OUT:-sweeps/$(basename "$RECIPE" .yaml)}
LAUNCH=${PAPER_LAUNCH:-urp-train}
read -r -a PREDICT <<< "${SWEEP_PREDICT---max-samples 16 --max-new-tokens 16}"
mkdir -p "$OUT/runs" "$OUT/predictions" "$OUT/reports"
for lam in ${SWEEP_LAMBDAS:-0.5 1.0}; do
  for scale in ${SWEEP_SCALES:-5.0 2.5}; do
    for freeze in ${SWEEP_FREEZE:-false true}; do
      vision=trainable; [ "$freeze" = true ] && vision=frozen
      name="lambda${lam}_scale${scale}_${vision}"
      $LAUNCH grpo --config "$RECIPE" --build_dir "$BUILD" --output_dir "$OUT/runs/$name" \
        --reward_weights 1.0 "$lam" --accuracy_scale "$scale" --freeze_vision_tower "$freeze" "$@"
      urp-eval predict --data "$BUILD" --split unseen --backend transformers --model "$OUT/runs/$name" \
        --out "$OUT/predictions/$name-unseen.parquet" "${PREDICT[@]}"
      urp-eval bias-report --data "$BUILD" --predictions "$OUT/predictions/$name-unseen.parquet" --split unseen \
        --out "$OUT/reports/$name-unseen" --permutations 99
    done
  done
done
python scripts/paper_table.py "$OUT/reports" --out "$OUT" --table sweep
