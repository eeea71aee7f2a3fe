#!/usr/bin/env bash
# The paper's comparison table from one command:
#   scripts/paper.sh BUILD RECIPE_SET [flags for every urp-train run...]
# e.g.  scripts/paper.sh build/demo demo --max-steps 4          (CPU, tiny model; makes the demo's warm start)
#       scripts/paper.sh build/global qwen2_5_vl_7b               (GPUs; see packages/urp-train/README.md)
#
# RECIPE_SET names configs/train/RECIPE_SET.yaml (GRPO) and configs/train/sft_RECIPE_SET.yaml (SFT);
# both must start from the same base model. The script trains GRPO, SFT, and GRPO without the
# image and without the text (the paper's modality ablations, `--drop`), predicts the seen and
# unseen test splits with each (the ablations predict with the same `--drop`, as they were
# trained), adds the kNN baseline, writes a bias report per (method, split) and one table
# (Markdown + HTML) laid out like the paper's. Everything goes to $PAPER_OUT (default
# paper/RECIPE_SET). $PAPER_PREDICT holds extra `urp-eval predict` flags (a CPU-sized slice:
# "--max-samples 16 --max-new-tokens 32"); set $PAPER_LAUNCH to "accelerate launch --config_file
# configs/accelerate/zero3.yaml -m urp_train.cli" for multi-GPU training.
#
# Zero-shot transfer: with $PAPER_HELD_OUT set to indicator names (e.g. "canopy_signal", an
# indicator defined only in the region YAML), the script also trains GRPO on the build's other
# indicators (`--train_indicators`), predicts the held-out ones on the unseen split with that
# model, with the base model (the recipe's model_name_or_path) and with kNN (which does see the
# held-out indicator's training labels), and writes $OUT/transfer/table.md (`--table transfer`).
# PAPER_ONLY_TRANSFER=1 skips the main table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: scripts/paper.sh BUILD RECIPE_SET [urp-train flags...]" >&2
  exit 2
fi
BUILD=$1; SET=$2; shift 2
GRPO=configs/train/$SET.yaml
SFT=configs/train/sft_$SET.yaml
OUT=${PAPER_OUT:-paper/$SET}
LAUNCH=${PAPER_LAUNCH:-urp-train}
read -r -a PREDICT <<< "${PAPER_PREDICT:-}"
for f in "$GRPO" "$SFT" "$BUILD/manifest.json"; do
  [ -f "$f" ] || { echo "paper.sh: error: $f not found" >&2; exit 2; }
done
base() { sed -n 's/^model_name_or_path: *\([^ #]*\).*/\1/p' "$1"; }
if [ "$(base "$GRPO")" != "$(base "$SFT")" ]; then
  echo "paper.sh: error: $GRPO starts from $(base "$GRPO") but $SFT from $(base "$SFT"); use one base" >&2
  exit 2
fi
# The base model, before any training: the recipe's, or a --model_name_or_path flag's (the demo's
# warm start is made when missing, without the held-out indicators; see scripts/warmstart_demo.sh).
BASE_MODEL=$(bash scripts/warmstart_demo.sh paper.sh "$GRPO" "$BUILD" "${PAPER_HELD_OUT:-}" "$@")
mkdir -p "$OUT/runs" "$OUT/predictions" "$OUT/reports"

train() {  # train NAME COMMAND RECIPE [flags...]
  local name=$1 cmd=$2 recipe=$3; shift 3
  $LAUNCH "$cmd" --config "$recipe" --build-dir "$BUILD" --output-dir "$OUT/runs/$name" "$@"
}
predict_and_report() {  # predict_and_report NAME [predict flags...]
  local name=$1; shift
  for split in seen unseen; do
    urp-eval predict --data "$BUILD" --split "$split" --out "$OUT/predictions/$name-$split.parquet" "$@"
    urp-eval bias-report --data "$BUILD" --predictions "$OUT/predictions/$name-$split.parquet" --split "$split" \
      --out "$OUT/reports/$name-$split" --permutations 99
  done
}

transfer() {  # zero-shot transfer to the indicators in $PAPER_HELD_OUT
  local held trained t=$OUT/transfer
  read -r -a held <<< "$PAPER_HELD_OUT"
  read -r -a trained <<< "$(python scripts/other_indicators.py "$BUILD" "${held[@]}")"
  [ ${#trained[@]} -gt 0 ] || { echo "paper.sh: error: PAPER_HELD_OUT leaves no indicator to train on" >&2; exit 2; }
  mkdir -p "$t/predictions" "$t/reports"
  train transfer grpo "$GRPO" --train_indicators "${trained[@]}" "$@"
  local name
  for name in knn base transfer; do
    local how=(--backend knn)
    [ "$name" = base ] && how=(--backend transformers --model "$BASE_MODEL" "${PREDICT[@]}")
    [ "$name" = transfer ] && how=(--backend transformers --model "$OUT/runs/transfer" "${PREDICT[@]}")
    urp-eval predict --data "$BUILD" --split unseen --indicators "${held[@]}" \
      --out "$t/predictions/$name-unseen.parquet" "${how[@]}"
    urp-eval bias-report --data "$BUILD" --predictions "$t/predictions/$name-unseen.parquet" --split unseen \
      --out "$t/reports/$name-unseen" --permutations 99
  done
  python scripts/paper_table.py "$t/reports" --out "$t" --table transfer
}

if [ -z "${PAPER_ONLY_TRANSFER:-}" ]; then
  train grpo grpo "$GRPO" "$@"
  train sft sft "$SFT" "$@"
  train grpo-no-image grpo "$GRPO" --drop image "$@"
  train grpo-no-text grpo "$GRPO" --drop text "$@"

  predict_and_report knn --backend knn
  for name in grpo sft; do
    predict_and_report "$name" --backend transformers --model "$OUT/runs/$name" "${PREDICT[@]}"
  done
  predict_and_report grpo-no-image --backend transformers --model "$OUT/runs/grpo-no-image" --drop image "${PREDICT[@]}"
  predict_and_report grpo-no-text --backend transformers --model "$OUT/runs/grpo-no-text" --drop text "${PREDICT[@]}"

  python scripts/paper_table.py "$OUT/reports" --out "$OUT"
fi
if [ -n "${PAPER_HELD_OUT:-}" ]; then
  transfer "$@"
fi
