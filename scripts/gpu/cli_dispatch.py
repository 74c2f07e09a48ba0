"""The CLI on a dispatch artifact for --target cuda: `sparsec compile` here, `sparsec run` on the GPU machine.

    .venv/bin/python scripts/gpu/cli_dispatch.py build MODELDIR        # here (TVM + nvcc): MODELDIR/cli/
    python3 scripts/gpu/cli_dispatch.py check MODELDIR OUT.json        # GPU machine (TVM runtime bundle only)

``build`` compiles ``examples/decoder_mlp.py`` (prefill 128 tokens, decode 1 token: ``dispatch_inputs``) with
``sparsec compile --target cuda --arch sm_90a`` and saves beside it the model's state dict and fp16 inputs of
both shapes and of a shape no variant takes. ``check`` runs ``sparsec run`` (the CLI's own code, in process) on
each input and compares the output with eager torch fp16 on the GPU (the example's module with the saved
weights): within ``TOL``, and the unknown shape must be one error naming the available variants. Exit 1 on any
failure.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(REPO, "examples", "decoder_mlp.py")
TOL = 2e-2


def build(mdir: str) -> int:
    import numpy as np
    import torch

    cdir = os.path.join(mdir, "cli")
    os.makedirs(cdir, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "sparsec", "compile", EXAMPLE, "--target", "cuda", "--arch", "sm_90a",
                        "--quiet", "-o", os.path.join(cdir, "dm.sparsec")], capture_output=True, text=True, cwd=REPO)
    print(r.stdout + r.stderr, end="")
    if r.returncode:
        return 1
    ns = runpy.run_path(EXAMPLE, run_name="__sparsec_model__")
    torch.save(ns["model"].state_dict(), os.path.join(cdir, "state.pt"))
    np.save(os.path.join(cdir, "x128.npy"), ns["example_inputs"]()[0].half().numpy())
    np.save(os.path.join(cdir, "x1.npy"), ns["dispatch_inputs"]()[0][0].half().numpy())
    np.save(os.path.join(cdir, "x7.npy"), np.zeros((7, 128), np.float16))
    return 0


def check(mdir: str, out_json: str) -> int:
    sys.path.insert(0, HERE)
    import env  # noqa: F401  (sparsec from the checkout, TVM runtime bundle)
    import numpy as np
    import torch

    from sparsec.cli import main

    cdir = os.path.join(mdir, "cli")
    ns = runpy.run_path(EXAMPLE, run_name="__sparsec_model__")
    model = ns["model"]
    model.load_state_dict(torch.load(os.path.join(cdir, "state.pt")))
    model = model.half().cuda().eval()
    art = os.path.join(cdir, "dm.sparsec")
    res, bad = {"machine": env.machine_info(), "runs": {}}, 0
    for name in ("x128", "x1"):
        x = os.path.join(cdir, f"{name}.npy")
        y = os.path.join(cdir, f"y_{name}.npy")
        rc = main(["run", art, "--input", x, "--output", y])
        with torch.no_grad():
            ref = model(torch.from_numpy(np.load(x)).cuda()).float().cpu()
        got = torch.from_numpy(np.load(y)).float() if rc == 0 else None
        err = float((got - ref).abs().max() / ref.abs().max()) if got is not None and got.shape == ref.shape else None
        ok = rc == 0 and err is not None and err <= TOL
        bad += not ok
        res["runs"][name] = {"rc": rc, "shape": list(ref.shape), "max_rel_err": err, "ok": ok}
        print(f"[{'OK ' if ok else 'BAD'}] sparsec run {name}: rc {rc}, max rel err vs torch fp16 {err}", flush=True)
    err_text = io.StringIO()
    with contextlib.redirect_stderr(err_text):
        rc = main(["run", art, "--input", os.path.join(cdir, "x7.npy")])
    ok = rc == 1 and "no variant" in err_text.getvalue() and "float16[1, 128]" in err_text.getvalue()
    bad += not ok
    res["runs"]["x7"] = {"rc": rc, "stderr": err_text.getvalue().strip()[-400:], "ok": ok}
    print(f"[{'OK ' if ok else 'BAD'}] sparsec run x7 (no such variant): rc {rc}: {err_text.getvalue().strip()[-200:]}")
    res["passed"], res["total"] = 3 - bad, 3
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)
    print(f"cli dispatch: {3 - bad}/3")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "build":
        sys.exit(build(sys.argv[2]))
    if len(sys.argv) >= 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
