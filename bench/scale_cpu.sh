#!/usr/bin/env bash
# CPU scale-out measurement behind docs/scale.md: the embedded model (examples/quickstart.yaml, LoRA), 12 steps,
# 1 process x batch 4 vs 2 processes (gloo) x batch 2 (the same global batch of 4), and a 2-process run killed
# after its step-6 checkpoint and resumed; then the same 2-process run and kill/resume with FSDP2
# (distributed.strategy=fsdp) for its peak RSS per process next to DDP's. Run from the repository root on a quiet
# machine:
#   bash bench/scale_cpu.sh [OUT_DIR]
# Peak RSS: GNU time's "Maximum resident set size", which for a launcher is its largest single descendant (a worker).
set -eu
OUT=${1:-runs/scale-cpu}
mkdir -p "$OUT"
CFG=examples/quickstart.yaml
COMMON=(output.dir="$OUT" output.overwrite=true train.max_steps=12 train.logging_steps=1 train.save_steps=6)
export OMP_NUM_THREADS=1

timed() {  # timed NAME COMMAND...: wall seconds and peak RSS into OUT/NAME.time
  local name=$1; shift
  /usr/bin/time -v -o "$OUT/$name.time" "$@" >"$OUT/$name.log" 2>&1 || true
  echo "$name: $(grep 'Elapsed (wall' "$OUT/$name.time" | awk '{print $NF}') wall, peak RSS" \
    "$(( $(grep 'Maximum resident' "$OUT/$name.time" | awk '{print $NF}') / 1024 )) MiB"
}

timed one tuneforge train "$CFG" name=one train.batch_size=4 train.threads=2 "${COMMON[@]}"
timed one-plain tuneforge train "$CFG" name=one-plain train.batch_size=4 train.threads=2 \
  train.label_only_logits=false "${COMMON[@]}"
timed two tuneforge train "$CFG" name=two train.batch_size=2 train.threads=1 "${COMMON[@]}" --nproc 2

# the kill: torchrun's own command (an external launcher), rank 0 SIGKILLed once step 6's checkpoint is complete
cat >"$OUT/killer.py" <<'PY'
import os, signal, sys
import torch.distributed as dist
from transformers import TrainerCallback
from tuneforge.cli import load_config
from tuneforge.stages import run_stage

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == 6:
            dist.barrier()
            if dist.get_rank() == 0:
                os.kill(os.getpid(), signal.SIGKILL)

run_stage(load_config(sys.argv[1], sys.argv[2:]), callbacks=[KillAfterSave()])
PY
timed crash python -m torch.distributed.run --nproc-per-node=2 --standalone "$OUT/killer.py" "$CFG" name=crash \
  train.batch_size=2 train.threads=1 "${COMMON[@]}"
timed resumed tuneforge train "$CFG" name=crash train.batch_size=2 train.threads=1 "${COMMON[@]}" --resume --nproc 2

FSDP=(distributed.strategy=fsdp train.batch_size=2 train.threads=1 "${COMMON[@]}")
timed fsdp tuneforge train "$CFG" name=fsdp "${FSDP[@]}" --nproc 2
timed fsdp-crash python -m torch.distributed.run --nproc-per-node=2 --standalone "$OUT/killer.py" "$CFG" \
  name=fsdp-crash "${FSDP[@]}"
timed fsdp-resumed tuneforge train "$CFG" name=fsdp-crash "${FSDP[@]}" --resume --nproc 2

# Peak RSS per process, DDP vs FSDP2, LoRA and full fine-tuning: every rank records its own high-water marks
# (/proc/self/status VmHWM): after loading (train begin), for the training phase alone (reset at train begin), and
# at train end; the gather and save at the end (rank 0 builds one more copy of the model) come after.
cat >"$OUT/peak.py" <<'PY'
import json, os, sys
from pathlib import Path
import torch.distributed as dist
from transformers import TrainerCallback
from tuneforge.cli import load_config
from tuneforge.stages import run_stage

def hwm_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

class Peak(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
        self.loaded = hwm_mib()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS

    def on_train_end(self, args, state, control, **kw):
        out = Path(os.environ["PEAK_OUT"]) / f"{os.environ['PEAK_NAME']}.rank{dist.get_rank()}.json"
        out.write_text(json.dumps({"loaded_mib": self.loaded, "train_mib": hwm_mib()}))

run_stage(load_config(sys.argv[1], sys.argv[2:]), callbacks=[Peak()])
PY
python - "$CFG" "$OUT/full.yaml" <<'PY'
import sys, yaml
raw = yaml.safe_load(open(sys.argv[1]))
raw["method"] = {"name": "full"}  # the quickstart with every weight trained
raw["train"]["lr"] = 1e-5
yaml.safe_dump(raw, open(sys.argv[2], "w"))
PY
for arm in lora-ddp lora-fsdp full-ddp full-fsdp; do
  cfg=$CFG; [[ $arm == full-* ]] && cfg=$OUT/full.yaml
  extra=(); [[ $arm == *-fsdp ]] && extra=(distributed.strategy=fsdp)
  PEAK_OUT="$OUT" PEAK_NAME=$arm timed "peak-$arm" python -m torch.distributed.run --nproc-per-node=2 --standalone \
    "$OUT/peak.py" "$cfg" name="peak-$arm" train.batch_size=2 train.threads=1 "${COMMON[@]}" train.max_steps=4 \
    train.save_steps=100 ${extra[@]+"${extra[@]}"}
done

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def losses(name):
    rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}
def rel(a, b):
    return max(abs(a[s] - b[s]) / abs(b[s]) for s in b)
one, plain, two, resumed = losses("one"), losses("one-plain"), losses("two"), losses("crash")
fsdp, fsdp_resumed = losses("fsdp"), losses("fsdp-crash")
print("| step | 1 proc x 4 | 1 proc x 4 (plain loss) | 2 procs x 2 | 2 procs killed at 6, resumed | FSDP 2 x 2 |"
      " FSDP killed at 6, resumed |")
print("|---|---|---|---|---|---|---|")
nan = float("nan")
for s in sorted(one):
    print(f"| {s} | {one[s]:.6f} | {plain[s]:.6f} | {two[s]:.6f} | {resumed.get(s, nan):.6f} | {fsdp.get(s, nan):.6f} |"
          f" {fsdp_resumed.get(s, nan):.6f} |")
print(f"max relative difference, 2 procs vs 1: {rel(two, one):.2e} (vs the plain-loss 1-proc run: {rel(two, plain):.2e})")
print(f"max relative difference, resumed vs uninterrupted 2-proc run: {rel(resumed, two):.2e}")
print(f"max relative difference, FSDP vs DDP (2 procs): {rel(fsdp, two):.2e}; FSDP resumed vs FSDP: {rel(fsdp_resumed, fsdp):.2e}")
print()
print("| run (2 processes) | high-water mark up to training, MiB (rank 0 / 1) | training phase peak, MiB (rank 0 / 1) |"
      " training start to exit (GNU time), MiB |")
print("|---|---|---|---|")
for arm in ["lora-ddp", "lora-fsdp", "full-ddp", "full-fsdp"]:
    ranks = [json.loads((out / f"{arm}.rank{r}.json").read_text()) for r in (0, 1)]
    whole = next(l for l in (out / f"peak-{arm}.time").read_text().splitlines() if "Maximum resident" in l)
    print(f"| {arm} | {ranks[0]['loaded_mib']:.0f} / {ranks[1]['loaded_mib']:.0f} | {ranks[0]['train_mib']:.0f} / "
          f"{ranks[1]['train_mib']:.0f} | {int(whole.split()[-1]) // 1024} |")
PY
