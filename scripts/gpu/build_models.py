"""Build side (TVM + nvcc, no GPU): compile the whole models of the GPU check for --target cuda.

    .venv/bin/python scripts/gpu/build_models.py [OUTDIR=out/gpu_models] [--arch sm_90a] [--only a,b]

Writes OUTDIR/<model>.sparsec (artifacts), OUTDIR/<model>.inputs.pt (example inputs) and
OUTDIR/models.json (per model: dtype, weight checksum, formats, build times). The models and their
weights come from scripts/gpu/models.py (rebuilt from code on the GPU machine for the eager reference).

BERT-base (encoder only, 90 % unstructured, fp16) is compiled for batch 1 and 8 x 128 tokens and
shipped without its weights/ folders (30 MB each): the build checks that packing the model rebuilt
from code (scripts/gpu/models.py) reproduces every weight file bit for bit, and the GPU side
(scripts/gpu/check_models.py, benchmarks/e2e_gpu.py) repacks them before loading, where the
manifest's sha256 check covers them again (``weights_from_code`` in models.json). ~6 MB travel.
``decode_dispatch`` (shape-aware dispatch: one artifact, a variant per token count) travels the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import torch  # noqa: E402

import models as M  # noqa: E402

# name -> (model key, dtype, batch for bert_base)
CASES = {
    "mlp": ("mlp", "float16", None),
    "mlp_bf16": ("mlp", "bfloat16", None),
    "mlp_fp32": ("mlp", "float32", None),
    "cnn": ("cnn", "float16", None),
    "bert_encoder": ("bert_encoder", "float16", None),
    "decoder_mlp": ("decoder_mlp", "float16", None),
    "decode_mlp": ("decode_mlp", "float16", None),      # 32 tokens: tiled mma="wg" on sm_90a
    "decode_mlp16": ("decode_mlp16", "float16", None),  # 16 tokens: tiled mma="wg" with sp=1 (2:4 operand)
    "decode_mlp16_70": ("decode_mlp16@70", "float16", None),  # 70 % at 16 tokens: tiled mma="wg", pos7 stages
    "decode_mlp1_70": ("decode_mlp1@70", "float16", None),  # 70 % at one token: the mma.sync tiled kernel, pos7
    # a fused GELU at 16 tokens and 70 %: tiled mma="wg" with its splits summed by the fixup (fx=1)
    "decode_gelu16_70": ("decode_gelu16@70", "float16", None),
    # shape-aware dispatch: one artifact, three variants (128, 16 and 1 tokens), each with its own kernels
    "decode_dispatch": ("decode_dispatch", "float16", None),
    # 4096 -> 11008 -> 4096 at 64 tokens and 60 %: the cost rule runs both layers dense (wgmma); with the H100
    # tuning records of benchmarks/results/dev/fmt14 (TUNING_DB) the format is decided by measurement: tiled
    "llm_mlp60": ("llm_mlp@60", "float16", None),
    "llm_mlp60_tuned": ("llm_mlp@60", "float16", None),
    "hf_bert": ("hf_bert", "float16", None),
    "hf_gpt2": ("hf_gpt2", "float16", None),
    "bert_base_b8": ("bert_base", "float16", 8),
    "bert_base_b1": ("bert_base", "float16", 1),
    # BERT-base with 2:4 weights (--arch sm_90a: the FFN linears at 1024 tokens run wgmma.mma_async.sp)
    "bert_base_b8_24": ("bert_base@2:4", "float16", 8),
    # the same models with the planner's pdl=2 off (SPARSEC_CUDA_PDL=0): benchmarks/pair_models_gpu.py times the pair
    "decode_mlp16_70_nopdl": ("decode_mlp16@70", "float16", None),
    "llm_mlp60_nopdl": ("llm_mlp@60", "float16", None),
}
NO_PDL = ("decode_mlp16_70_nopdl", "llm_mlp60_nopdl")


# cases compiled with a tuning database (the format decided by measurement where it has both sides); the others
# without one (tuning_db=False: the cost rule's formats; the shipped records still give the tiled kernels' knobs)
TUNING_DB = {"llm_mlp60_tuned": "benchmarks/results/dev/fmt14/db.jsonl"}
# model keys whose weights travel as code (rebuilt and checked bit for bit on the GPU machine): too large to ship
WEIGHTS_FROM_CODE = ("bert_base", "llm_mlp")


def _rebuilds_exactly(key: str, path: str, name: str) -> bool:
    """Whether ``models.write_weights`` rebuilds every file of the artifact's weights/ bit for bit from the model
    rebuilt from code (the artifact is left as it was)."""
    from sparsec.backends.artifact import read_manifest, verify_files

    wdir = os.path.join(path, "weights")
    keep = wdir + ".orig"
    os.rename(wdir, keep)
    try:
        M.write_weights(M.build(key)[0], path)
        verify_files(path, read_manifest(path))
    except Exception as exc:  # noqa: BLE001  (keep the shipped weights then)
        print(f"{name}: weights cannot be regenerated from code ({exc}); shipping them")
        return False
    finally:
        shutil.rmtree(wdir, ignore_errors=True)
        os.rename(keep, wdir)
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir", nargs="?", default="out/gpu_models")
    ap.add_argument("--arch", default="sm_90a", help="sm_90a (default): dense layers at >= 128 tokens may use wgmma")
    ap.add_argument("--only", help="comma-separated case names")
    args = ap.parse_args()
    import sparsec

    os.makedirs(args.outdir, exist_ok=True)
    index_path = os.path.join(args.outdir, "models.json")
    index = json.load(open(index_path)) if os.path.exists(index_path) else {}
    names = args.only.split(",") if args.only else list(CASES)
    failed = []
    for name in names:
        key, dtype, batch = CASES[name]
        t0 = time.perf_counter()
        model, inputs = M.build(key)
        if batch is not None:
            inputs = M.bert_base_inputs(batch)
        dispatch = isinstance(inputs, list)     # one variant per input tuple (shape-aware dispatch)
        if name in NO_PDL:
            os.environ["SPARSEC_CUDA_PDL"] = "0"
        else:
            os.environ.pop("SPARSEC_CUDA_PDL", None)
        try:
            if dispatch:
                c = sparsec.compile_dispatch(model, inputs, target="cuda", arch=args.arch, dtype=dtype)
            else:
                db = TUNING_DB.get(name)
                c = sparsec.compile(model, inputs, target="cuda", arch=args.arch, dtype=dtype,
                                    tuning_db=os.path.join(REPO, db) if db else False)
        except Exception as exc:  # noqa: BLE001  (report every model, then fail)
            print(f"{name}: FAILED {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}", flush=True)
            failed.append(name)
            continue
        path = c.save(os.path.join(args.outdir, f"{name}.sparsec"))
        variants = c.variants if dispatch else [c]
        if dispatch:                            # the variants' example inputs, in variant order
            torch.save([tuple(v.example_inputs) for v in variants], os.path.join(args.outdir, f"{name}.inputs.pt"))
        elif batch is None:                     # BERT-base inputs are drawn from code on the GPU machine
            torch.save(tuple(c.example_inputs), os.path.join(args.outdir, f"{name}.inputs.pt"))
        tag = (lambda i, w: f"v{i} {w}") if dispatch else (lambda i, w: w)
        entry = {"model": key, "dtype": dtype, "arch": args.arch, "batch": batch,
                 "checksum": M.checksum(model), "steps": sum(v.timings["steps"] for v in variants),
                 "functions": sum(v.timings["functions"] for v in variants),
                 "build_s": round(time.perf_counter() - t0, 1),
                 "formats": {tag(i, r["weight"]): r["format"] for i, v in enumerate(variants) for r in v.report},
                 # per matmul: format + kernel design picked by the H100 cost rule (backends/cuda/select.py)
                 "designs": {tag(i, k["weight"]): f"{k['format']} {k['design']}"
                             for i, v in enumerate(variants) for k in v.compiled.kernels.values()}}
        if dispatch:
            entry["dispatch"] = len(variants)
        if name in TUNING_DB:
            entry["tuning_db"] = TUNING_DB[name]
        if name in NO_PDL:
            entry["pdl"] = False
        if key.partition("@")[0] in WEIGHTS_FROM_CODE or dispatch:
            # ship it without weights/ (BERT-base: 30 MB): check here that packing the model rebuilt from code
            # reproduces every file bit for bit, then drop them (check_models/e2e_gpu repack them)
            vdirs = [os.path.join(path, f"v{i}") for i in range(len(variants))] if dispatch else [path]
            if all(_rebuilds_exactly(key, d, name) for d in vdirs):
                for d in vdirs:
                    shutil.rmtree(os.path.join(d, "weights"))
                entry["weights_from_code"] = True
        index[name] = entry
        from collections import Counter

        mix = Counter(entry["designs"].values())
        print(f"{name}: {entry['steps']} steps, {entry['functions']} functions, "
              f"{entry['build_s']} s -> {path}; matmuls: {', '.join(f'{n} {d}' for d, n in sorted(mix.items()))}",
              flush=True)
    tmp = index_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, index_path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
