"""`sparsec compile model.py --target llvm`: prune (if asked), pick formats, build, write the artifact."""
from __future__ import annotations

import os
import sys

import torch

from sparsec.ir.errors import ParameterError


def print_report(report: list[dict]) -> None:
    print(f"{'layer (weight)':<36}{'op':<8}{'shape':<16}{'sparsity':>9}  {'format':<22}{'bytes':>11}{'vs dense':>9}")
    tot, dense = 0, 0
    for r in report:
        params = ",".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in r["params"].items())
        fmt = r["format"] + (f"({params})" if params else "")
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['weight']:<36}{r['op'] or '':<8}{shape:<16}{r['sparsity']:>9.1%}  {fmt:<22}{r['bytes']:>11,}"
              f"{r['bytes_vs_dense']:>9.3f}")
        tot += r["bytes"]
        dense += r["dense_bytes"]
    if report:
        print(f"{'total':<69}{tot:>11,}{tot / max(dense, 1):>9.3f}")


def print_explain(report: list[dict]) -> None:
    """Per layer: every candidate with its predicted (and measured) time, the choice and why."""
    for r in report:
        shape = "x".join(map(str, r["shape"]))
        epi = f", fused {r['epilogue']}" if r.get("epilogue") else ""
        print(f"{r['weight']}  [{r['op']} %{r['node']} {shape}, T={r['tokens']}, sparsity {r['sparsity']:.1%}{epi}]")
        if r["candidates"] and "predicted_us" in r["candidates"][0]:     # --target cuda: (format, design) pairs
            for c in sorted(r["candidates"], key=lambda c: c["predicted_us"]):
                mark = "->" if c.get("chosen") else "  "
                meas = f"  measured {c['measured_us']:9.1f} us (tuning db)" if "measured_us" in c else ""
                print(f"  {mark} {c['format'] + ' ' + c['design']:<26} predicted {c['predicted_us']:9.1f} us "
                      f"({c.get('source', 'fit')}){meas}")
            print(f"     choice: {r['format']}: {r['reason']}")
            continue
        for c in sorted(r["candidates"], key=lambda c: c.get("measured_s", c["predicted_s"])):
            params = ",".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in c["params"].items())
            name = c["format"] + (f"({params})" if params else "")
            meas = f"  measured {c['measured_s'] * 1e6:9.1f} us" if "measured_s" in c else ""
            mark = "->" if c["format"] == r["format"] and c["params"] == r["params"] else "  "
            need = f"  needs {c['required_margin']:.2f}x" if "required_margin" in c else ""
            print(f"  {mark} {name:<26} predicted {c['predicted_s'] * 1e6:9.1f} us{meas}  {c['bytes']:>11,} B{need}")
        print(f"     choice: {r['format']}: {r['reason']}")


def check_against_reference(compiled, quiet: bool = False) -> float:
    """Run the compiled model and the reference interpreter on the example inputs; max relative error."""
    from sparsec.ir.interpret import interpret

    x = compiled.example_inputs
    ref = interpret(compiled.graph, *x)
    got = compiled(*x)
    err = 0.0
    for r, o in zip(ref, got):
        if r.dtype.is_floating_point:
            err = max(err, float((o.float() - r.float()).abs().max() / r.float().abs().max().clamp_min(1e-6)))
        elif not torch.equal(o, r):
            err = float("inf")
    return err


def run(args) -> int:
    from sparsec.api import compile as sc_compile
    from sparsec.ir.errors import ModelError

    if args.sparsity is not None and not (0.0 <= args.sparsity < 1.0):
        raise ParameterError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    out = args.output or os.path.splitext(os.path.basename(args.model))[0] + ".sparsec"
    progress = None
    if not args.quiet and sys.stderr.isatty():
        from rich.progress import Progress
        bar = Progress(transient=True)
        task = None

        def progress(i, n, name):
            nonlocal task
            if task is None:
                bar.start()
                task = bar.add_task("lowering", total=n)
            bar.update(task, completed=i + 1, description=f"lowering {name}")
            if i + 1 == n:
                bar.stop()
    if args.spec and (args.pattern or args.sparsity is not None):
        raise ParameterError("--spec and --pattern/--sparsity are exclusive: put the pattern in the spec's rules")
    if args.target != "arm" and (args.cpu or args.emit):
        raise ParameterError("--cpu and --emit apply to --target arm only")
    if args.target != "cuda" and (args.arch or args.dtype):
        raise ParameterError("--arch and --dtype apply to --target cuda only")
    from sparsec.frontends.load import load_model
    extra = {"arch": args.arch, "dtype": args.dtype} if args.target == "cuda" else {}
    if load_model(args.model).dispatch_inputs:      # one variant per input shape (docs/dispatch.md)
        return run_dispatch(args, out, progress, extra)
    c = sc_compile(args.model, target=args.target, sparsity=args.sparsity, pattern=args.pattern,
                   format=args.format, measure=args.measure, spec=args.spec, cpu=args.cpu, emit=args.emit,
                   progress=progress, **extra)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if not args.json:
        print_report(c.report)
        if args.explain:
            print()
            print_explain(c.report)
    t = c.timings
    say(f"compiled {t['steps']} steps ({t['functions']} distinct functions) for {_target_name(c.compiled.target)} "
        f"in {t['total_s']:.1f}s (import {t['import_s']:.1f}s, passes {t['passes_s']:.1f}s, "
        f"build {t['build_s']:.1f}s)")
    if args.target == "cuda":
        _print_tunable(getattr(c.compiled, "kernels", None), say)
    err = None
    _skip_check_without_gpu(args, say)
    if not args.no_check:
        err = check_against_reference(c)
        say(f"check: compiled vs reference interpreter on the example inputs: max relative error {err:.2e}")
        if not err <= _check_tolerance(args):
            raise ModelError(f"{args.model}: compiled model disagrees with the reference interpreter "
                             f"(max relative error {err:.2e}); not writing {out}")
    path = c.save(out)
    say(f"wrote {path}")
    if args.json:
        import json
        print(json.dumps({"artifact": path, "check_max_rel_error": err, "report": c.report, "timings": t},
                         indent=1))
    return 0


def _target_name(target) -> str:
    """TVM 0.27 targets print as JSON: "cuda sm_90a" for {"kind": "cuda", ..., "arch": "sm_90a"}."""
    import json

    text = str(target)
    try:
        d = json.loads(text)
    except ValueError:
        return text
    return " ".join(str(d[k]) for k in ("kind", "arch", "mcpu", "mtriple") if d.get(k)) if isinstance(d, dict) \
        else text


def _skip_check_without_gpu(args, say) -> None:
    """--target cuda runs on a GPU: without one here the check against the reference is skipped, saying so."""
    if args.target == "cuda" and not args.no_check:
        import torch

        if not torch.cuda.is_available():
            say("check: skipped (--target cuda and no GPU here); scripts/gpu_check.sh checks artifacts "
                "against eager torch on a GPU")
            args.no_check = True


def _check_tolerance(args) -> float:
    """Max relative error against the fp32 reference interpreter: fp16/bf16 kernels on the GPU get 3e-2."""
    return 3e-2 if args.target == "cuda" and (args.dtype or "float16") != "float32" else 1e-3


def _print_tunable(kernels, say) -> None:
    """--target cuda: how many kernels `sparsec autotune` can tune, and how many already run tuned knobs."""
    ks = kernels or {}
    tuned = [k for k in ks.values() if k.get("tuned")]
    tiled = [k for k in ks.values() if k.get("design") == "tiled"
             or (k.get("design") == "wgmma" and k.get("format") == "dense")]
    if tiled:
        say(f"tunable kernels (tiled, dense wgmma): {len(tiled)}, {len(tuned)} with tuned knobs"
            + (f" ({', '.join(sorted({os.path.basename(k['tuned']['db']) for k in tuned}))})" if tuned else
               " (`sparsec autotune --target cuda` measures them)"))


def run_dispatch(args, out: str, progress, extra: dict) -> int:
    """The model file defines dispatch_inputs(): compile, check and save one variant per input shape."""
    from sparsec.backends.dispatch import compile_dispatch, format_signature, print_dispatch_report
    from sparsec.ir.errors import ModelError

    c = compile_dispatch(args.model, target=args.target, sparsity=args.sparsity, pattern=args.pattern,
                         format=args.format, measure=args.measure, spec=args.spec, cpu=args.cpu, emit=args.emit,
                         progress=progress, **extra)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    say(f"shape-aware dispatch: {len(c.variants)} variants (the model file defines dispatch inputs)")
    if not args.json:
        print_dispatch_report(c.report, c.signatures)
        if args.explain:
            for i, (v, sig) in enumerate(zip(c.variants, c.signatures)):
                print(f"\nvariant v{i} {format_signature(sig)}:")
                print_explain(v.report)
    errs = []
    _skip_check_without_gpu(args, say)
    for i, (v, sig) in enumerate(zip(c.variants, c.signatures)):
        t = v.timings
        say(f"v{i} {format_signature(sig)}: compiled {t['steps']} steps ({t['functions']} distinct functions) "
            f"for {_target_name(v.compiled.target)} in {t['total_s']:.1f}s")
        if args.target == "cuda":
            _print_tunable(getattr(v.compiled, "kernels", None), lambda *a: say(f"v{i}", *a))
        err = None
        if not args.no_check:
            err = check_against_reference(v)
            say(f"v{i} check: compiled vs reference interpreter: max relative error {err:.2e}")
            if not err <= _check_tolerance(args):
                raise ModelError(f"{args.model}: variant v{i} {format_signature(sig)} disagrees with the reference "
                                 f"interpreter (max relative error {err:.2e}); not writing {out}")
        errs.append(err)
    path = c.save(out)
    say(f"wrote {path}")
    if args.json:
        import json
        print(json.dumps({"artifact": path, "variants": [{"inputs": v.compiled.plan["inputs"], "check_max_rel_error": e}
                                                         for v, e in zip(c.variants, errs)],
                          "report": c.report, "timings": c.timings}, indent=1))
    return 0


def register(sub) -> None:
    from sparsec.passes.select import FORMAT_CHOICES

    p = sub.add_parser("compile", help="compile a model file into a runnable artifact",
                       description="Compile a model file (see `sparsec inspect`) for a target. Without --pattern/"
                                   "--sparsity the model's function is unchanged: weights that are already sparse "
                                   "in a pattern are detected and stored exactly.")
    p.add_argument("model", help="model file (defines model/get_model and example_inputs/EXAMPLE_INPUTS)")
    p.add_argument("--target", default="llvm", help="llvm (this CPU) | arm (aarch64 Linux, NEON) | cuda (NVIDIA GPU)")
    p.add_argument("--arch", help="--target cuda: the GPU architecture (sm_90 default, sm_90a: Hopper-only, adds the "
                   "wgmma GEMM for dense layers at >= 128 tokens; sm_80, sm_86, sm_89)")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"),
                   help="--target cuda: weights and activations are cast to this dtype (default float16)")
    p.add_argument("--cpu", help="--target arm: the core (default neoverse-n1; cortex-a76, cortex-a55, ...)")
    p.add_argument("--emit", help="--target arm: 'c' adds a standalone C driver (c/) beside lib.so")
    p.add_argument("-o", "--output", help="artifact directory (default: <model>.sparsec)")
    p.add_argument("--sparsity", type=float, help="prune to this fraction of zeros (default pattern unstructured)")
    p.add_argument("--pattern", help="unstructured | N:M | block:RxC | group:G")
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="weight format (default auto)")
    p.add_argument("--spec", help="per-layer sparsity rules (TOML or JSON; see docs)")
    p.add_argument("--measure", action="store_true",
                   help="time the best predicted formats and dense on this CPU and keep the fastest")
    p.add_argument("--explain", action="store_true", help="print every candidate format per layer and why")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-check", action="store_true", help="skip the check against the reference interpreter")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
