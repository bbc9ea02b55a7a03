#!/usr/bin/env bash
# The forgetting study behind docs/strategy.md: two tasks, A (ISO dates, examples/strategy/a_dates.yaml) and B
# (SST-2 sentiment, examples/strategy/b_sst2.yaml), trained alone, one after the other in both orders (the
# second continues the first's adapter: model.adapter), as one mix (mix.yaml), and as the mix with a replay
# share of general chat data (mix_replay.yaml); then one forgetting report: the base model and the six runs on
# the target tasks (examples/strategy/tasks.yaml) and the general set (examples/strategy/general.yaml), with the
# study's contrasts (A then B minus A, ...). Each run is skipped when its folder holds result.json and the report
# when it is newer than every run, so a stopped study resumes where it was. From the repository root, with
# ../shared/data beside it:
#   bash bench/strategy_study.sh          (≈75 min on a 2-core Zen 3 at 1 thread; THREADS=2 when the machine is quiet)
set -eu
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
S=examples/strategy
done_() { [ -f "runs/$1/result.json" ]; }
train() {  # train NAME CONFIG [overrides]: resume a stopped run from its last checkpoint, else start it
  local name=$1 cfg=$2
  shift 2
  done_ "$name" && return 0
  if [ -d "runs/$name/checkpoints" ] && ls "runs/$name/checkpoints" | grep -q checkpoint-; then
    tuneforge train "$cfg" name="$name" train.threads="$THREADS" "$@" --resume
  else
    tuneforge train "$cfg" name="$name" train.threads="$THREADS" "$@" --overwrite
  fi
}

python bench/strategy_data.py runs/strategy_data
train st_a $S/a_dates.yaml
train st_b $S/b_sst2.yaml
train st_a_then_b $S/b_sst2.yaml model.adapter=runs/st_a
train st_b_then_a $S/a_dates.yaml model.adapter=runs/st_b
train st_mix $S/mix.yaml
train st_mix_replay $S/mix_replay.yaml

RUNS=(runs/st_a runs/st_b runs/st_a_then_b runs/st_b_then_a runs/st_mix runs/st_mix_replay)
OUT=runs/strategy_report
fresh=1
for r in "${RUNS[@]}"; do [ "$OUT/forgetting.json" -nt "$r/result.json" ] || fresh=0; done
[ $fresh = 1 ] || tuneforge forgetting "${RUNS[@]}" --general $S/general.yaml --target $S/tasks.yaml --output "$OUT"
echo "report: $OUT/forgetting.md, $OUT/general/report.md, $OUT/target/report.md"
