"""Run a sparsec artifact with only the TVM runtime and numpy (no torch, no sparsec).

Shipped in every aarch64 artifact as ``run_on_device.py``; on the device:

    PYTHONPATH=<tvm runtime bundle> TVM_USE_RUNTIME_LIB=1 python3 run_on_device.py ARTIFACT IN.npy... -o OUTDIR

It checks every file's sha256 against the manifest, loads ``lib.so`` with
``tvm.runtime.load_module``, and runs the manifest's plan over 64-byte-aligned
numpy storages (values that share a storage are views of it, as in
``sparsec.backends.runtime.Executor``). Outputs are written as ``OUTDIR/out<i>.npy``.
"""
import hashlib
import json
import os
import sys
import time

import numpy as np

_NP = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64,
       "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
       "bfloat16": np.int16}


class ArtifactError(Exception):
    pass


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _aligned(nbytes, align=64):
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes]


class DeviceModel:
    def __init__(self, path):
        import tvm

        self.path = path
        with open(os.path.join(path, "manifest.json")) as f:
            self.manifest = m = json.load(f)
        for rel, digest in m["files"].items():
            full = os.path.join(path, rel)
            if not os.path.isfile(full) or _sha256(full) != digest:
                raise ArtifactError(f"{full}: missing or sha256 mismatch")
        self.lib = tvm.runtime.load_module(os.path.join(path, "lib.so"))
        plan = self.plan = m["plan"]
        storages = [_aligned(max(int(n), 1)) for n in plan["storages"]]
        self.arrays = {}
        for name, v in plan["values"].items():
            dt = np.dtype(_NP[v["dtype"]])
            shape = tuple(v["shape"])
            if v["kind"] == "const":
                a = np.load(os.path.join(path, m["weights"][v["const"]]), allow_pickle=False)
                buf = _aligned(a.nbytes).view(a.dtype).reshape(a.shape)
                buf[...] = a
                a = buf.view(dt).reshape(shape)
            else:
                n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
                a = storages[v["storage"]][:n].view(dt).reshape(shape)
            self.arrays[name] = a
        tens = {n: tvm.runtime.from_dlpack(a) for n, a in self.arrays.items()}
        self.steps = [(self.lib[s["func"]], [tens[a] for a in s["args"]]) for s in plan["steps"]]

    def __call__(self, *inputs):
        for spec, x in zip(self.plan["inputs"], inputs):
            dst = self.arrays[spec["name"]]
            if tuple(x.shape) != dst.shape or x.dtype != dst.dtype:
                raise ArtifactError(f"input {spec['name']}: expected {dst.dtype}{list(dst.shape)}, "
                                    f"got {x.dtype}{list(x.shape)}")
            dst[...] = x
        for f, args in self.steps:
            f(*args)
        return [self.arrays[o].copy() for o in self.plan["outputs"]]


def main(argv):
    if "-o" not in argv or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    k = argv.index("-o")
    out_dir = argv[k + 1]
    art, ins = argv[0], argv[1:k]
    t0 = time.time()
    model = DeviceModel(art)
    t1 = time.time()
    outs = model(*[np.load(p, allow_pickle=False) for p in ins])
    t2 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    for i, o in enumerate(outs):
        np.save(os.path.join(out_dir, f"out{i}.npy"), o)
    print(f"run_on_device: load {t1 - t0:.2f}s run {t2 - t1:.2f}s outputs {len(outs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
