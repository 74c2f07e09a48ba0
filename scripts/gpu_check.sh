#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, PyTorch and no TVM, run the CUDA correctness suite and the
# benchmarks of sparsec's CUDA backend, writing JSON, logs and plots to OUTDIR.
#
#   usage: scripts/gpu_check.sh OUTDIR
#   env:   SPARSEC_TVM_BUNDLE  TVM runtime bundle for this Python  (default out/tvm_bundle)
#          SPARSEC_GPU_KERNELS prebuilt kernels (scripts/gpu/build_kernels.py)  (default out/gpu)
#          SPARSEC_GPU_MODELS  prebuilt model artifacts (scripts/gpu/build_models.py) (default out/gpu_models)
#          BENCH_BUDGET_S      seconds for benchmarks/spmm_gpu.py (default 300)
# Everything it needs is built elsewhere (TVM + nvcc, no GPU): see docs/cuda.md.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: gpu_check.sh OUTDIR}")
cd "$(dirname "$0")/.."
BUNDLE=$(realpath "${SPARSEC_TVM_BUNDLE:-out/tvm_bundle}")
KDIR=$(realpath "${SPARSEC_GPU_KERNELS:-out/gpu}")
MDIR=$(realpath -m "${SPARSEC_GPU_MODELS:-out/gpu_models}")
mkdir -p "$OUT"
export PYTHONPATH="$BUNDLE${PYTHONPATH:+:$PYTHONPATH}" TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
rc=0
$PY scripts/gpu/check_kernels.py "$KDIR" "$OUT/check_kernels_gpu.json" > "$OUT/check_kernels_gpu.log" 2>&1 || rc=1
tail -n 3 "$OUT/check_kernels_gpu.log"
if [ -d "$MDIR" ]; then
  $PY scripts/gpu/check_models.py "$MDIR" "$OUT/check_models_gpu.json" 2>&1 | tee "$OUT/check_models_gpu.log" || rc=1
  $PY benchmarks/e2e_gpu.py "$MDIR" "$OUT" 2>&1 | tee "$OUT/e2e_gpu.log" || rc=1
fi
$PY benchmarks/spmm_gpu.py "$KDIR" "$OUT" --budget-s "${BENCH_BUDGET_S:-300}" > "$OUT/spmm_gpu.log" 2>&1 || rc=1
grep -v "^\s*$" "$OUT/spmm_gpu.log" | tail -n 40
exit $rc
