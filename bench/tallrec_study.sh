#!/usr/bin/env bash
# The TALLRec few-shot study behind docs/recipes/tallrec.md (issue 17): LoRA on 16 / 64 / 256 samples drawn from
# the book `valid` split (examples/recipes/tallrec.yaml with data.mix_size=N), then the base model and each arm
# scored on the book `test` split (in-domain) and the movie `test` split (cross-domain) by the AUC of P(Yes), and
# one table with paired 95% intervals of each arm's AUC minus the base's. Run from the repository root, with
# ../shared/data beside it:
#
#   bash bench/tallrec_study.sh [OUT_DIR] [key=value ...]        (OUT_DIR default: runs/tallrec-study)
#   ARMS="16 64" bash bench/tallrec_study.sh runs/tallrec-quick eval.limit=300     (a smaller setting)
#
# key=value overrides go to every train and eval command (train.threads=1 on a shared machine, eval.limit=N for a
# seeded sample of each test split; give the same ones on a rerun, a resumed run refuses a changed config).
# Resumable per arm: an arm whose run has result.json is not trained again, a half-trained one resumes from its
# last checkpoint (train.resume=true), one without a checkpoint restarts (output.overwrite=true); a model whose
# report folder OUT/eval/<model>/ is finished is not scored again, a half-written one (<model>.partial) is redone.
# Each arm's report folder records the result.json it scored (scored-result.sha256): an arm trained again since
# is scored again. To train an arm again delete its run folder OUT/runs/tallrec-book-N (deleting only result.json
# would resume from the final checkpoint and train nothing); to score a model again delete its report folder.
# Writes OUT/tallrec.md and OUT/tallrec.json.
# RECIPE=... swaps the recipe, TUNEFORGE=... the CLI command (tests/test_recipe_tallrec_study.py runs this script
# with a stub one), PYTHON=... the interpreter of the table step.
set -euo pipefail

OUT=runs/tallrec-study
if [ $# -gt 0 ] && [[ $1 != *=* ]]; then OUT=$1; shift; fi
EXTRA=("$@")
ARMS=${ARMS:-"16 64 256"}
read -r -a TF <<<"${TUNEFORGE:-tuneforge}" # the CLI, e.g. TUNEFORGE="python -m tuneforge.cli"
PYTHON=${PYTHON:-python}
RECIPE=${RECIPE:-examples/recipes/tallrec.yaml}
mkdir -p "$OUT/logs" "$OUT/eval"

log() { echo "[$(date '+%F %T')] $*" | tee -a "$OUT/study.log"; }
fail() { log "FAILED: $1 (log: $2)"; tail -n 20 "$2" >&2; exit 1; }

log "study in $OUT: arms $ARMS; overrides: ${EXTRA[*]:-none}; $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) cores"

for n in $ARMS; do
  name=tallrec-book-$n
  run=$OUT/runs/$name
  if [ -f "$run/result.json" ]; then
    log "arm $n: trained already ($run/result.json), skipped"
    continue
  fi
  how=()
  if compgen -G "$run/checkpoints/checkpoint-*" >/dev/null; then
    how=(train.resume=true)
    log "arm $n: resuming from $(ls -d "$run"/checkpoints/checkpoint-* | sort -t- -k2 -n | tail -n 1)"
  elif [ -e "$run" ]; then
    how=(output.overwrite=true)
    log "arm $n: $run has no checkpoint, restarting it"
  fi
  start=$(date +%s)
  log "arm $n: training $name on $n book samples"
  "${TF[@]}" train "$RECIPE" name="$name" data.mix_size="$n" output.dir="$OUT/runs" "${how[@]}" "${EXTRA[@]}" \
    >"$OUT/logs/train-$n.log" 2>&1 || fail "training arm $n" "$OUT/logs/train-$n.log"
  log "arm $n: trained in $(($(date +%s) - start)) s"
done

RECORD=scored-result.sha256 # in an arm's report folder: the sha256 of the run's result.json it scored
digest() { sha256sum "$1" | cut -d' ' -f1; }

score() { # score LABEL RUN WORDS...: one model's report into OUT/eval/LABEL, unless it is finished for RUN
  local label=$1 run=$2 dir=$OUT/eval/$1 want=
  shift 2
  if [ -n "$run" ]; then want=$(digest "$run/result.json"); fi
  if [ -f "$dir/report.json" ]; then
    if [ -z "$run" ] || [ "$(cat "$dir/$RECORD" 2>/dev/null)" = "$want" ]; then
      log "$label: scored already ($dir), skipped"
      return
    fi
    log "$label: $dir scored another $run/result.json (trained again since), scoring it again"
  fi
  rm -rf "$dir.partial"
  local start
  start=$(date +%s)
  log "$label: scoring on book test and movie test"
  "${TF[@]}" eval "$RECIPE" "$@" --output "$dir.partial" >"$OUT/logs/eval-$label.log" 2>&1 \
    || fail "scoring $label" "$OUT/logs/eval-$label.log"
  if [ -n "$run" ]; then echo "$want" >"$dir.partial/$RECORD"; fi
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  log "$label: scored in $(($(date +%s) - start)) s"
}

# The base alone: a name with no run folder, so the config's own run is not picked up.
score base "" name=tallrec-study-base output.dir="$OUT/runs" "${EXTRA[@]}"
for n in $ARMS; do
  run=$OUT/runs/tallrec-book-$n
  score "tallrec-book-$n" "$run" eval.base=false output.dir="$OUT/runs" "${EXTRA[@]}" --run "$run"
done

"$PYTHON" -m tuneforge.bench.tallrec_table "$OUT" | tee -a "$OUT/study.log"
log "table: $OUT/tallrec.md"
