#!/usr/bin/env bash
# The anchors' Meta-world protocol (preset=metaworld) for some arms and seeds, one run after
# the other, then their curves beside the published DreamerV2 ones (experiments/anchor_curves.py).
# Every run is the example's own command and resumes where it stopped when run again.
#
#   DEVICE=cuda ARMS="dreamer" SEEDS="0 1" OUT=runs/metaworld bash scripts/metaworld_runs.sh
#   DEVICE=cpu PRESET=test ENV_STEPS=150 OUT=/tmp/mw bash scripts/metaworld_runs.sh  # seconds
#
# DEVICE (cpu | cuda), PRESET (metaworld; test: a seconds-long check of the script, as
# tests/test_anchor_curves.py runs it), ARMS, SEEDS, TASK (reach-v3), OUT (runs/metaworld),
# ENV_STEPS (35000),
# MAX_SECONDS (per run and invocation; empty: none), PRETRAINED (the prelar arm's model),
# THREADS (CPU threads per run), EXTRA (more Hydra overrides, space-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-metaworld}
ARMS=${ARMS:-dreamer}
SEEDS=${SEEDS:-0 1}
TASK=${TASK:-reach-v3}
OUT=${OUT:-runs/metaworld}
ENV_STEPS=${ENV_STEPS:-35000}
export MUJOCO_GL=${MUJOCO_GL:-egl}
report=()
for arm in $ARMS; do
  for seed in $SEEDS; do
    run_dir="$OUT/${arm}_seed${seed}"
    args=(stage=finetune "arm=$arm" "preset=$PRESET" "device=$DEVICE" "seed=$seed"
          "run_dir=$run_dir" "finetune.task=$TASK" "finetune.env_steps=$ENV_STEPS"
          "name=${arm}_seed${seed}")
    [[ -n "${MAX_SECONDS:-}" ]] && args+=("finetune.max_seconds=$MAX_SECONDS")
    [[ -n "${THREADS:-}" ]] && args+=("threads=$THREADS")
    [[ "$arm" != dreamer && -n "${PRETRAINED:-}" ]] && args+=("finetune.pretrained=$PRETRAINED")
    # shellcheck disable=SC2206
    [[ -n "${EXTRA:-}" ]] && args+=($EXTRA)
    python examples/dreamer_prelar.py "${args[@]}"
    report+=(--run "$arm=$run_dir")
  done
done
python experiments/anchor_curves.py "${report[@]}" --task "${TASK%-v3}" --out "$OUT/${TASK%-v3}"
