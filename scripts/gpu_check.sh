#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, PyTorch and no TVM, run the CUDA correctness suite and the
# benchmarks of sparsec's CUDA backend, writing JSON, logs and plots to OUTDIR.
#
#   usage: scripts/gpu_check.sh OUTDIR
#   env:   SPARSEC_TVM_BUNDLE  TVM runtime bundle for this Python  (default out/tvm_bundle)
#          SPARSEC_GPU_KERNELS prebuilt kernels (scripts/gpu/build_kernels.py)  (default out/gpu)
#          BENCH_BUDGET_S      seconds for benchmarks/spmm_gpu.py (default 300)
#          SPARSEC_GPU_MODELS  whole models compiled for cuda (scripts/gpu/build_models.py)  (default out/gpu_models)
#          GPU_CHECK_PARTS     which parts to run: any of kernels,spmm,models,e2e,tune (default all but tune)
#          SPARSEC_GPU_TUNE    part "tune": a directory from `sparsec autotune --target cuda --emit DIR` (or
#                              scripts/gpu/build_tune.py); writes OUTDIR/tune_results.json for `--import`
# Everything it needs is built elsewhere (TVM + nvcc, no GPU): see docs/cuda.md.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: gpu_check.sh OUTDIR}")
cd "$(dirname "$0")/.."
BUNDLE=$(realpath "${SPARSEC_TVM_BUNDLE:-out/tvm_bundle}")
KDIR=$(realpath "${SPARSEC_GPU_KERNELS:-out/gpu}")
MDIR=$(realpath -m "${SPARSEC_GPU_MODELS:-out/gpu_models}")
PARTS=",${GPU_CHECK_PARTS:-kernels,spmm,models,e2e},"
want() { [[ "$PARTS" == *",$1,"* ]]; }
mkdir -p "$OUT"
export PYTHONPATH="$BUNDLE${PYTHONPATH:+:$PYTHONPATH}" TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
rc=0
if want tune; then
  if [[ -z "${SPARSEC_GPU_TUNE:-}" ]]; then echo "part tune: set SPARSEC_GPU_TUNE=DIR (sparsec autotune --emit DIR)" >&2; rc=1
  else
    $PY scripts/gpu/tune_tiled.py "$SPARSEC_GPU_TUNE" --out "$OUT/tune_results.json" > "$OUT/tune.log" 2>&1 || rc=1
    tail -n 1 "$OUT/tune.log"
  fi
fi
if want kernels; then
  $PY scripts/gpu/check_kernels.py "$KDIR" "$OUT/check_kernels_gpu.json" > "$OUT/check_kernels_gpu.log" 2>&1 || rc=1
  tail -n 3 "$OUT/check_kernels_gpu.log"
fi
if want spmm; then
  $PY benchmarks/spmm_gpu.py "$KDIR" "$OUT" --budget-s "${BENCH_BUDGET_S:-300}" > "$OUT/spmm_gpu.log" 2>&1 || rc=1
  grep -v "^\s*$" "$OUT/spmm_gpu.log" | tail -n 40
  $PY scripts/gpu/summarize.py "$OUT/spmm_gpu.json" "$OUT/check_kernels_gpu.json" > "$OUT/spmm_gpu.md" || rc=1
fi
# whole models (--target cuda artifacts) vs eager torch on this GPU, then BERT-base end to end
if want models; then
  $PY scripts/gpu/check_models.py "$MDIR" "$OUT/check_models_gpu.json" 2>&1 | tee "$OUT/check_models_gpu.log" || rc=1
  if [[ -d "$MDIR/cli" ]]; then     # `sparsec run` on a dispatch artifact (scripts/gpu/cli_dispatch.py build)
    $PY scripts/gpu/cli_dispatch.py check "$MDIR" "$OUT/cli_dispatch_gpu.json" 2>&1 | tee "$OUT/cli_dispatch_gpu.log" || rc=1
  fi
fi
if want e2e; then
  $PY benchmarks/e2e_gpu.py "$MDIR" "$OUT" > "$OUT/e2e_gpu.log" 2>&1 || rc=1
  grep -v "^\s*$" "$OUT/e2e_gpu.log" | tail -n 30
fi
exit $rc
