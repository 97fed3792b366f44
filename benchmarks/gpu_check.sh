#!/usr/bin/env bash
# One-shot GPU check (issue 18): the CUDA tests, then the GPU benchmark, logs into $OUT.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh
#
# Needs only what the GPU image has (torch with CUDA, numpy, scipy, scikit-learn, matplotlib,
# pillow, safetensors, tqdm): no pip install, the package is read from src/ via PYTHONPATH.
# numba is optional (the CPU's pruned kNN only). MNIST is read from .gpu_data/mnist at the
# repository root when present. About 6 minutes at most: each part has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-logs}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
if [ -d .gpu_data/mnist ]; then
  export DIGITLAB_DATA="$PWD/.gpu_data/mnist"
  export DIGITLAB_TEST_DATA="$PWD/.gpu_data/mnist"
fi
PY="${PYTHON:-python}"
{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  # Everything digitlab imports at module level must be on the image (gradio, numba, ray: optional).
  "$PY" -c "import digitlab, digitlab.cli, digitlab.pipeline, digitlab.neighbors, digitlab.train, digitlab.gan_train; print('digitlab imports: ok')"
} 2>&1 | tee "$OUT/env.log"

rc=0
echo "== tests/test_cuda.py" | tee "$OUT/test_cuda.log"
timeout 150 "$PY" -m pytest tests/test_cuda.py -q -p no:cacheprovider -rs 2>&1 \
  | tee -a "$OUT/test_cuda.log" || rc=1

echo "== benchmarks/bench_gpu.py" | tee "$OUT/bench_gpu.log"
timeout 210 "$PY" benchmarks/bench_gpu.py 2>&1 | tee -a "$OUT/bench_gpu.log" || rc=1
tail -n 1 "$OUT/bench_gpu.log" > "$OUT/bench_gpu.json"
echo "== done (rc $rc); logs in $OUT"
exit $rc
