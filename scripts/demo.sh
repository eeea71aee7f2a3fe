#!/usr/bin/env bash
# The whole urp loop on the offline demo region, on the CPU, in a few minutes:
# build the dataset, train a tiny model with GRPO, predict the unseen country, report bias, preview the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."

urp-data build --region demo --out build
urp-train tiny-model --out models/tiny-qwen2.5-vl
urp-train grpo --config configs/train/demo.yaml

mkdir -p outputs/demo
urp-eval predict --backend knn --data build/demo --split unseen --out outputs/demo/knn.parquet
urp-eval predict --backend transformers --model runs/demo-grpo --data build/demo --split unseen \
  --max-samples 16 --max-new-tokens 32 --batch-size 8 --out outputs/demo/grpo.parquet

# Exit code 1 from a report means a threshold was breached; these runs set none.
urp-eval bias-report --data build/demo --predictions outputs/demo/knn.parquet --split unseen --out reports/demo-knn
urp-eval bias-report --data build/demo --predictions outputs/demo/grpo.parquet --split unseen --out reports/demo-grpo
urp-eval compare reports/demo-knn reports/demo-grpo
urp-data preview build/demo --out reports/demo-preview.html
echo "reports: reports/demo-knn/report.html, reports/demo-grpo/report.html; the dataset: reports/demo-preview.html"
