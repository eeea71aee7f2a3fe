#!/usr/bin/env bash
# Zero-shot transfer on the demo data from one command (CPU, a few minutes):
#   bash scripts/transfer_demo.sh [urp-train flags...]
# Builds configs/regions/demo_transfer.yaml (part of Olinda; canopy_signal is defined only in that
# YAML), trains GRPO for two steps on its other indicators from the demo's format warm start
# (runs/demo-warmstart, made when missing without canopy_signal: scripts/warmstart_demo.sh), predicts
# canopy_signal on the unseen split with that model, the base model and kNN, and writes
# $PAPER_OUT/transfer/table.md (default paper/demo-transfer). It shows the wiring, not transfer:
# a 10M-parameter model that has learnt the answer format knows nothing else to transfer.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${PAPER_OUT:-paper/demo-transfer}
urp-data build --region configs/regions/demo_transfer.yaml --out build
PAPER_OUT=$OUT PAPER_ONLY_TRANSFER=1 PAPER_HELD_OUT=canopy_signal \
  PAPER_PREDICT="${PAPER_PREDICT:---max-samples 16 --max-new-tokens 16}" \
  bash scripts/paper.sh build/demo_transfer demo --max_steps 2 "$@"
