#!/usr/bin/env bash
# GPU smoke run: a few steps of every training stage in bf16 with flash attention, on a
# copy of this project's last commit (git archive HEAD: uncommitted changes are left out)
# in a temporary folder, then one line per stage with its steps per second and peak GPU
# memory (from the stage's metrics file), and bench/train_step.py's side-by-side step on
# CUDA, and bench/generate.py (HF generate vs vLLM) when .avar/vllm-env exists.
#
#   bash bench/gpu_smoke.sh                         # the small preset, 10 steps a stage
#   MODEL=Qwen/Qwen2.5-VL-7B-Instruct STEPS=5 EXTRA="-S sft_mm.lora.r=16" bash bench/gpu_smoke.sh
#
# Environment: MODEL (default small), STEPS (10), ATTENTION (flash_attention_2), DTYPE
# (bf16), DEVICE (cuda), EXTRA (more -S overrides), KEEP=1 keeps the folder. On a machine
# without a GPU, `DEVICE=cpu DTYPE=fp32 ATTENTION=sdpa MODEL=tiny STEPS=2` checks the script.
set -euo pipefail

MODEL=${MODEL:-small}
STEPS=${STEPS:-10}
ATTENTION=${ATTENTION:-flash_attention_2}
DTYPE=${DTYPE:-bf16}
DEVICE=${DEVICE:-cuda}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d -t avar-gpu-smoke-XXXXXX)
if [[ -z ${KEEP:-} ]]; then trap 'rm -rf "$WORK"' EXIT; fi

python - "$DEVICE" "$ATTENTION" <<'PY'
import importlib.util, sys
import torch
device, attention = sys.argv[1:]
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_smoke: no CUDA GPU here (DEVICE=cpu ATTENTION=sdpa DTYPE=fp32 checks the script)")
if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
    sys.exit("gpu_smoke: flash-attn is not installed (the GPU image has it; or ATTENTION=sdpa)")
if device == "cuda":
    print(f"gpu_smoke: {torch.cuda.get_device_name()}, torch {torch.__version__}")
PY

git -C "$ROOT" archive HEAD | tar -x -C "$WORK"
cd "$WORK"
echo "gpu_smoke: $MODEL, $STEPS steps a stage, $DTYPE, $ATTENTION, in $WORK"
SETTINGS=(
  -S "model.name_or_path=$MODEL" -S "model.device=$DEVICE" -S "model.dtype=$DTYPE"
  -S "model.attention=$ATTENTION"
  -S data.visual.n=64 -S data.text.n=32 -S data.heldout.n=16 -S checkpoint_eval.limit=8
  -S base.heldout=16 -S "base.max_steps=$STEPS" -S "base.save_steps=$STEPS"
  -S "coldstart_text.max_steps=$STEPS" -S "coldstart_text.save_steps=$STEPS"
  -S "sft_mm.max_steps=$STEPS" -S "sft_mm.save_steps=$STEPS"
  -S "rl.max_steps=$STEPS" -S "rl.save_steps=$STEPS"
)
# shellcheck disable=SC2206  # EXTRA is a list of words on purpose
SETTINGS+=(${EXTRA:-})

for stage in prepare base curate coldstart_text sft_mm rl; do
  avar stage "$stage" "${SETTINGS[@]}" > "$WORK/$stage.log" 2>&1 || {
    tail -20 "$WORK/$stage.log"; echo "gpu_smoke: $stage failed (log: $WORK/$stage.log)"; exit 1
  }
done

python - <<'PY'
import json
from pathlib import Path

print(f"{'stage':<16}{'steps':>6}{'seconds':>9}{'steps/s':>9}{'peak GPU GB':>13}")
for stage in ("base", "coldstart_text", "sft_mm", "rl"):
    path = Path(f"metrics/{stage}.json")
    if not path.is_file():
        continue
    m = json.loads(path.read_text())
    steps, seconds = m.get("steps", 0), m.get("seconds") or 0
    rate = f"{steps / seconds:.2f}" if seconds else "-"
    peak = m.get("peak_gpu_gb")
    print(f"{stage:<16}{steps:>6}{seconds:>9.1f}{rate:>9}{'-' if peak is None else peak:>13}")
PY

if [[ $DEVICE == cuda ]]; then
  python bench/train_step.py --device cuda --dtype "$DTYPE" --length 2048
fi

# HF generate vs vLLM (bench/generate.py) when the checkout has a vLLM environment
# (`make vllm-env VLLM_PACKAGE=vllm==...`, the CUDA build): the tiny model, or MODEL when it
# names a hub model or a folder.
if [[ -x $ROOT/.avar/vllm-env/bin/python ]]; then
  GENERATE=(--device "$DEVICE" --dtype "$DTYPE")
  [[ $MODEL == tiny || $MODEL == small ]] || GENERATE+=(--model "$MODEL")
  python "$ROOT/bench/generate.py" "${GENERATE[@]}"
fi
