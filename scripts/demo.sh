#!/usr/bin/env bash
# The whole urp loop on the offline demo region, on the CPU, in about five minutes on an idle
# 2-core machine: build the dataset, teach a tiny random-weight model the answer format (SFT),
# train it with GRPO and plot its reward per step, predict the unseen country, report bias, preview the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
# Small matrices: a few threads help (2 threads: 1.25 s per warm-start step against 2.1 s with one on an
# idle 2-core machine), many only spin. On a busy shared machine, OMP_NUM_THREADS=1 is steadier.
cores=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores < 4 ? cores : 4 ))}

urp-data build --region demo --out build
urp-train tiny-model --out models/tiny-qwen2.5-vl
urp-train sft --config configs/train/warmstart_demo.yaml      # format warm start -> runs/demo-warmstart
urp-train grpo --config configs/train/demo.yaml               # GRPO from the warm start -> runs/demo-grpo
mkdir -p reports outputs/demo
python scripts/plot_rewards.py runs/demo-grpo --out reports/demo-reward.png   # and one line per step

urp-eval predict --backend knn --data build/demo --split unseen --out outputs/demo/knn.parquet
urp-eval predict --backend transformers --model runs/demo-grpo --data build/demo --split unseen \
  --max-samples 16 --max-new-tokens 16 --batch-size 8 --out outputs/demo/grpo.parquet

# These runs set no thresholds (exit code 3 would mean one was breached).
urp-eval bias-report --data build/demo --predictions outputs/demo/knn.parquet --split unseen --out reports/demo-knn
urp-eval bias-report --data build/demo --predictions outputs/demo/grpo.parquet --split unseen --out reports/demo-grpo
urp-eval compare reports/demo-knn reports/demo-grpo
urp-data preview build/demo --out reports/demo-preview.html
echo "reward curve: reports/demo-reward.png; reports: reports/demo-knn/report.html, reports/demo-grpo/report.html; the dataset: reports/demo-preview.html"
