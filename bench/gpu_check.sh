#!/usr/bin/env bash
# The prepared GPU check (one call on a lent GPU machine; see README, "The full study"):
#   1. bench_diffusion.py: the AMOS config's model vs Konz et al.'s reference, 256 px, batch 16, with MFU;
#   2. bench_amos_gpu.py: real training steps of the AMOS config on phantom data at 256 px through
#      the DataLoader, then sampling; peak GPU memory; diversity of the k generations vs oracle renders.
# BENCH_S=0 skips step 1; AMOS_STEPS / AMOS_S set step 2's training steps and time limit.
# Wheels the GPU image lacks travel in .whl/ (monai, nibabel, jsonschema, diffusers, ...).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore TQDM_MININTERVAL=5
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
if [ "${BENCH_S:-260}" != 0 ]; then  # BENCH_S=0 skips step 1 (GNU timeout 0 would mean no limit)
  timeout "${BENCH_S:-260}" python3 bench/bench_diffusion.py --size 256 --batch 16 --config config/amos.yaml \
    --train-steps "${TRAIN_STEPS:-20}" --ref-steps 10 --json "$OUT/bench_diffusion.json" 2>&1 \
    | tr '\r' '\n' | grep -v "it/s\]\|step/s\]\|s/step\]" | tee "$OUT/bench_diffusion.log"
fi
timeout "${AMOS_S:-260}" python3 bench/bench_amos_gpu.py --config config/amos.yaml --steps "${AMOS_STEPS:-300}" \
  --json "$OUT/amos_gpu.json" --figure "$OUT/amos_gpu_oracle_vs_generated.png" 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|step/s\]\|s/step\]" | tail -60 | tee "$OUT/amos_gpu.log"
