#!/usr/bin/env bash
# The sweep of scripts/sweep.sh on the demo from one command (CPU, ~10 min on an idle 2-core machine):
#   bash scripts/sweep_demo.sh [urp-train flags for every run...]
# Builds the demo region, makes the demo's format warm start when missing (runs/demo-warmstart), and
# runs GRPO for two steps from it over λ ∈ {0.5, 1.0} × accuracy_scale 5.0 × frozen/trainable vision
# (four runs; $SWEEP_LAMBDAS, $SWEEP_SCALES, $SWEEP_FREEZE override), each predicted on 16 unseen
# samples and reported; the table is $SWEEP_OUT/table.md (default sweeps/demo). A 10M-parameter
# model after two steps shows the wiring, not the answer to the paper's questions.
set -euo pipefail
cd "$(dirname "$0")/.."
urp-data build --region demo --out build
SWEEP_SCALES=${SWEEP_SCALES:-5.0} bash scripts/sweep.sh build/demo configs/train/demo.yaml --max_steps 2 "$@"
