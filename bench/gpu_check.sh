#!/usr/bin/env bash
# The prepared GPU check (one call on a lent GPU machine; see README, "The full study"):
#   1. bench_diffusion.py: the AMOS config's model vs Konz et al.'s reference, 256 px, batch 16, with MFU;
#   2. bench_amos_gpu.py: real training steps of the AMOS config on phantom data at 256 px through
#      the DataLoader (EMA with its warm-up ramp), then sampling; peak GPU memory; diversity of the k
#      generations vs oracle renders;
#   3. (same script) the sampler grid at 256 px: DDIM-50 against DPM-Solver++ 2M (SDE, ODE) at 10, 8, 5
#      calls, diversity ratio and img/s per cell; then the chosen sampler compiled, bf16, batch 64 and 128
#      (img/s, peak memory). Goal: >= 50 img/s.
# BENCH_S=0 skips step 1; AMOS_STEPS / AMOS_S set step 2's training steps and time limit.
# Everything lands in $OUT (default docs/results/gpu_check/): JSON, logs and PNGs. Under 10 minutes.
# Wheels the GPU image lacks travel in .whl/ (monai, nibabel, jsonschema, diffusers, ...).
set -uo pipefail
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no GPU available: nothing measured (the script is ready; run it where nvidia-smi lists a GPU)"
  exit 0
fi
OUT=${OUT:-docs/results/gpu_check}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore TQDM_MININTERVAL=5
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
if [ "${BENCH_S:-150}" != 0 ]; then  # BENCH_S=0 skips step 1 (GNU timeout 0 would mean no limit)
  timeout "${BENCH_S:-150}" python3 bench/bench_diffusion.py --size 256 --batch 16 --config config/amos.yaml \
    --train-steps "${TRAIN_STEPS:-20}" --ref-steps 10 --json "$OUT/bench_diffusion.json" 2>&1 \
    | tr '\r' '\n' | grep -v "it/s\]\|step/s\]\|s/step\]" | tee "$OUT/bench_diffusion.log"
fi
timeout "${AMOS_S:-400}" python3 bench/bench_amos_gpu.py --config config/amos.yaml --steps "${AMOS_STEPS:-300}" \
  --json "$OUT/amos_gpu.json" --figure "$OUT/amos_gpu_oracle_vs_generated.png" 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|step/s\]\|s/step\]" | tail -60 | tee "$OUT/amos_gpu.log"
