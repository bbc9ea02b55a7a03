#!/usr/bin/env bash
# GPU smoke test for tuneforge's scale-out paths (docs/scale.md). Run from the repository root on a machine with
# CUDA GPUs and tuneforge installed (pip install -e '.[deepspeed]'):  bash bench/gpu_smoke.sh [OUT_DIR]
# 1. 20 LoRA steps of SFT on one GPU (the quickstart config)   2. 5 DPO steps on one GPU
# with 2+ GPUs: 3. DDP on 2 GPUs (NCCL), same global batch as 1: losses compared   4. FSDP2 on 2 GPUs
#               5. DeepSpeed ZeRO-2 and ZeRO-3 on 2 GPUs (when deepspeed imports)
# Every step prints PASS/FAIL; the exit code is the number of failures. Logs in OUT_DIR (default runs/gpu-smoke).
set -u
OUT=${1:-runs/gpu-smoke}
mkdir -p "$OUT"
FAIL=0
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
echo "GPUs: $GPUS   torch $(python -c 'import torch; print(torch.__version__, torch.version.cuda)')"
[ "$GPUS" -ge 1 ] || { echo "no CUDA GPU: nothing to smoke-test"; exit 1; }
COMMON=(output.dir="$OUT" output.overwrite=true train.logging_steps=1 train.save_steps=0)

step() {  # step NAME COMMAND...: run, log, report
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then echo "PASS $name ($((SECONDS - t0)) s)"; else
    echo "FAIL $name ($((SECONDS - t0)) s): $(tail -n 1 "$OUT/$name.log")"; FAIL=$((FAIL + 1)); fi
}

losses() {  # losses RUN: the logged loss per step
  python -c "import json,sys; print([round(r['loss'],5) for r in map(json.loads, open(sys.argv[1])) if 'loss' in r])" \
    "$OUT/$1/metrics.jsonl"
}

export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $((GPUS - 1)))}
step sft-lora-1gpu env CUDA_VISIBLE_DEVICES=0 tuneforge train examples/quickstart.yaml name=sft-1gpu train.max_steps=20 "${COMMON[@]}"
step dpo-1gpu env CUDA_VISIBLE_DEVICES=0 tuneforge train examples/dpo.yaml name=dpo-1gpu train.max_steps=5 "${COMMON[@]}"

if [ "$GPUS" -ge 2 ]; then
  # same global batch: 1 GPU x batch 4 vs 2 GPUs x batch 2 (label-only loss off in both: it is off under DDP)
  SAME=(train.max_steps=20 train.label_only_logits=false "${COMMON[@]}")
  step ddp-ref-1gpu env CUDA_VISIBLE_DEVICES=0 tuneforge train examples/quickstart.yaml name=ddp-ref train.batch_size=4 "${SAME[@]}"
  step ddp-2gpu tuneforge train examples/quickstart.yaml name=ddp-2gpu train.batch_size=2 "${SAME[@]}" --nproc 2
  if [ -f "$OUT/ddp-ref/metrics.jsonl" ] && [ -f "$OUT/ddp-2gpu/metrics.jsonl" ]; then
    echo "  1 GPU  x batch 4: $(losses ddp-ref)"
    echo "  2 GPUs x batch 2: $(losses ddp-2gpu)"
  fi
  step fsdp2-2gpu tuneforge train examples/quickstart.yaml name=fsdp-2gpu distributed.strategy=fsdp train.batch_size=2 "${SAME[@]}" --nproc 2
  step fsdp2-offload-2gpu tuneforge train examples/quickstart.yaml name=fsdp-off distributed.strategy=fsdp distributed.offload=true train.max_steps=5 "${COMMON[@]}" --nproc 2
  step dpo-ddp-2gpu tuneforge train examples/dpo.yaml name=dpo-2gpu train.max_steps=5 train.batch_size=2 "${COMMON[@]}" --nproc 2
  if python -c "import deepspeed" 2>/dev/null; then
    step zero2-2gpu tuneforge train examples/quickstart.yaml name=zero2 distributed.strategy=deepspeed distributed.zero_stage=2 train.max_steps=5 "${COMMON[@]}" --nproc 2
    step zero3-2gpu tuneforge train examples/quickstart.yaml name=zero3 distributed.strategy=deepspeed distributed.zero_stage=3 train.max_steps=5 "${COMMON[@]}" --nproc 2
    step zero3-offload-2gpu tuneforge train examples/quickstart.yaml name=zero3-off distributed.strategy=deepspeed distributed.zero_stage=3 distributed.offload=true train.max_steps=5 "${COMMON[@]}" --nproc 2
  else
    echo "SKIP deepspeed: not installed (pip install 'tuneforge[deepspeed]')"
  fi
else
  echo "SKIP 2-GPU steps: $GPUS GPU"
fi
echo "failures: $FAIL"
exit $FAIL
