#!/usr/bin/env bash
# The base model of a run, made when it is the demo's missing warm start, then checked:
#   BASE=$(bash scripts/warmstart_demo.sh CALLER RECIPE.yaml BUILD "HELD_OUT..." [urp-train flags...])
# BASE is the recipe's model_name_or_path, or the last --model_name_or_path among the flags (as
# urp-train reads them); it is printed on stdout, everything else goes to stderr. CALLER names the
# script in error messages. The demo recipes (configs/train/demo.yaml, sft_demo.yaml) start from
# runs/demo-warmstart, the format warm start of scripts/demo.sh. When BASE is that folder and it is
# missing, it is made here: the tiny random model, then configs/train/warmstart_demo.yaml (SFT, 100
# steps, ~2.5 min on an idle 2-core machine) on BUILD, leaving out the HELD_OUT indicators (one
# space-separated argument, may be empty) so that a zero-shot row stays zero-shot. Without the warm
# start the tiny model answers nothing in format and every model row is empty. Any other BASE that
# is neither a folder nor on the hub is refused at once, in one line naming the command that makes
# it. Used by scripts/paper.sh and scripts/sweep.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLER=$1; BUILD=$3; HELD=$4
BASE=$(sed -n 's/^model_name_or_path: *\([^ #]*\).*/\1/p' "$2")
shift 4
while [ $# -gt 0 ]; do
  case $1 in
    --model_name_or_path|--model-name-or-path) BASE=${2:-}; shift ;;
    --model_name_or_path=*|--model-name-or-path=*) BASE=${1#*=} ;;
  esac
  shift
done
if [ "$BASE" = runs/demo-warmstart ] && [ ! -d "$BASE" ]; then
  {
    [ -d models/tiny-qwen2.5-vl ] || urp-train tiny-model --out models/tiny-qwen2.5-vl
    keep=()
    if [ -n "$HELD" ]; then
      read -r -a held <<< "$HELD"
      read -r -a keep <<< "$(python scripts/other_indicators.py "$BUILD" "${held[@]}")"
      keep=(--train_indicators "${keep[@]}")
    fi
    urp-train sft --config configs/train/warmstart_demo.yaml --build-dir "$BUILD" "${keep[@]}"
  } >&2
fi
python -c 'import sys
from urp_data.util.clikit import run
from urp_data.util.hub import check_model
sys.exit(run(sys.argv[1], lambda: check_model(sys.argv[2]) or 0))' "$CALLER" "$BASE" >&2
echo "$BASE"
