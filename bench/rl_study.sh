#!/usr/bin/env bash
# The GRPO study behind docs/rl.md ("Measured on the embedded model"): SFT on the plain ISO-date skill (the
# quickstart), GRPO on top of it on harder wordings (examples/grpo_hard.yaml), killed after its step-20
# checkpoint and resumed, then base / SFT / SFT + GRPO scored on the held-out hard and plain sets. Each arm is
# skipped when its run folder already holds result.json (an evaluation when its report is newer than the runs'
# results), so a stopped study resumes where it was; delete a run folder to train that arm again. From the
# repository root, on a quiet machine:
#   bash bench/rl_study.sh [RUNS_DIR]          (≈40 min on a 2-core Zen 3 at 1 thread)
set -eu
RUNS=${1:-runs}
export OMP_NUM_THREADS=1
done_() { [ -f "$RUNS/$1/result.json" ]; }

done_ rl_sft || tuneforge train examples/quickstart.yaml name=rl_sft output.dir="$RUNS" train.threads=1
GRPO=(examples/grpo_hard.yaml model.adapter="$RUNS/rl_sft" output.dir="$RUNS" train.threads=1)
if ! done_ grpo_hard; then
  if [ ! -d "$RUNS/grpo_hard/checkpoints/checkpoint-20" ]; then
    # the kill: SIGKILL once step 20's checkpoint is on disk (a crash, not a clean stop)
    tuneforge train "${GRPO[@]}" --overwrite &
    pid=$!
    until [ -f "$RUNS/grpo_hard/checkpoints/checkpoint-20/trainer_state.json" ]; do
      kill -0 $pid 2>/dev/null || { echo "the GRPO run stopped before its step-20 checkpoint" >&2; exit 1; }
      sleep 5
    done
    sleep 15 && kill -9 $pid || true
    wait $pid || true
  fi
  tuneforge train "${GRPO[@]}" --resume
fi
scored() {  # scored OUT: its report is newer than both runs' results (a retrained arm is scored again)
  [ "$1/report.json" -nt "$RUNS/rl_sft/result.json" ] && [ "$1/report.json" -nt "$RUNS/grpo_hard/result.json" ]
}
EVAL=(examples/eval_dates_hard.yaml "eval.runs=[$RUNS/rl_sft,$RUNS/grpo_hard]")
scored "$RUNS/rl_study/vs_base" || tuneforge eval "${EVAL[@]}" --output "$RUNS/rl_study/vs_base"
scored "$RUNS/rl_study/vs_sft" || tuneforge eval "${EVAL[@]}" eval.base=false --output "$RUNS/rl_study/vs_sft"
