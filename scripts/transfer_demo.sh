#!/usr/bin/env bash
# Zero-shot transfer on the demo data from one command (CPU, a few minutes):
#   bash scripts/transfer_demo.sh [urp-train flags...]
# Builds configs/regions/demo_transfer.yaml (part of Olinda; canopy_signal is defined only in that
# YAML), trains GRPO for two steps on its other indicators from the tiny random model, predicts
# canopy_signal on the unseen split with that model, the base model and kNN, and writes
# $PAPER_OUT/transfer/table.md (default paper/demo-transfer). It shows the wiring, not transfer:
# a random 10M-parameter model after two steps knows nothing to transfer.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${PAPER_OUT:-paper/demo-transfer}
urp-data build --region configs/regions/demo_transfer.yaml --out build
[ -f models/tiny-qwen2.5-vl/config.json ] || urp-train tiny-model --out models/tiny-qwen2.5-vl
PAPER_OUT=$OUT PAPER_ONLY_TRANSFER=1 PAPER_HELD_OUT=canopy_signal \
  PAPER_PREDICT="${PAPER_PREDICT:---max-samples 16 --max-new-tokens 16}" \
  bash scripts/paper.sh build/demo_transfer demo --model_name_or_path models/tiny-qwen2.5-vl --max_steps 2 "$@"
