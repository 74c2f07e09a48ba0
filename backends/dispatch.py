"""Shape-aware dispatch: one compiled variant per input shape, picked at call time.

Every kernel and format choice is specialised to the example input shapes; the
format that wins at 1 token (decode, memory-bound) often differs from the one
at 128 tokens (prefill). ``compile_dispatch`` compiles the same model once per
example-input tuple (each variant gets its own format choices and kernels) and
calls the variant whose input shapes and dtypes match the call.

The artifact is ONE directory, written atomically (temp dir + rename)::

    out.sparsec/
      manifest.json   {"artifact_version": 1, "kind": "dispatch",
                       "variants": [{"inputs": [{name, shape, dtype}], "dir": "v0"}, ...],
                       "report": per layer the format of every variant,
                       "files": {"v0/manifest.json": sha256, ...}}
      v0/, v1/, ...   one complete artifact per variant (as ``write_artifact`` writes it)

The top manifest hashes every sub-manifest, and each sub-manifest hashes its
own files, so ``DispatchLoaded`` verifies every file of every variant before
any library is loaded. ``sparsec.load`` returns it for such a directory.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np
import torch

from sparsec.backends.artifact import (ARTIFACT_VERSION, LIB, MANIFEST, load_weights, publish, read_manifest,
                                       sha256, verify_files)
from sparsec.ir.errors import ModelError, ParameterError, SerializationError

KIND = "dispatch"


# ----------------------------------------------------------------------------- signatures

def _dtype_name(dt) -> str:
    return str(dt).replace("torch.", "")


def signature(inputs: Sequence) -> tuple:
    """((shape, dtype), ...) of a call's inputs (torch tensors or numpy arrays)."""
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, (torch.Tensor, np.ndarray)):
            out.append((tuple(int(d) for d in x.shape), _dtype_name(x.dtype)))
        else:
            raise ModelError(f"input {i}: expected a tensor, got {type(x).__name__}")
    return tuple(out)


def spec_signature(specs: list[dict]) -> tuple:
    """The signature of a plan's ``inputs`` ([{name, shape, dtype}])."""
    return tuple((tuple(int(d) for d in s["shape"]), s["dtype"]) for s in specs)


def format_signature(sig: tuple) -> str:
    return "(" + ", ".join(f"{dt}{list(shape)}" for shape, dt in sig) + ")"


def _pick(signatures: list[tuple], inputs: Sequence, where: str) -> int:
    sig = signature(inputs)
    for i, s in enumerate(signatures):
        if s == sig:
            return i
    avail = "; ".join(f"v{i} {format_signature(s)}" for i, s in enumerate(signatures))
    raise ModelError(f"{where}: no variant compiled for input shapes {format_signature(sig)}; "
                     f"available: {avail}")


# ----------------------------------------------------------------------------- report

def dispatch_report(reports: list[list[dict]], signatures: list[tuple]) -> list[dict]:
    """Per layer (weight): the format chosen in every variant, with that variant's token count."""
    layers: dict[str, dict] = {}
    for vi, (rep, sig) in enumerate(zip(reports, signatures)):
        for r in rep:
            row = layers.setdefault(r["weight"], {
                "weight": r["weight"], "node": r["node"], "op": r["op"], "shape": r["shape"],
                "sparsity": r["sparsity"], "variants": [None] * len(reports)})
            row["variants"][vi] = {"variant": vi, "inputs": [[list(s), dt] for s, dt in sig],
                                   "tokens": r["tokens"], "format": r["format"], "params": r["params"],
                                   "bytes": r["bytes"], "bytes_vs_dense": r["bytes_vs_dense"],
                                   "reason": r["reason"]}
    return list(layers.values())


def _fmt_name(v: dict | None) -> str:
    if v is None:
        return "-"
    params = ",".join(f"{k}={tuple(x) if isinstance(x, list) else x}" for k, x in v["params"].items())
    return v["format"] + (f"({params})" if params else "")


def print_dispatch_report(report: list[dict], signatures: list[tuple]) -> None:
    """One line per layer: the format of every variant (T = that variant's token count)."""
    for i, s in enumerate(signatures):
        print(f"variant v{i}: inputs {format_signature(s)}")
    heads = [f"v{i}" for i in range(len(signatures))]
    print(f"{'layer (weight)':<36}{'op':<8}{'shape':<16}{'sparsity':>9}  "
          + "".join(f"{h + ' format (T)':<30}" for h in heads))
    for r in report:
        shape = "x".join(map(str, r["shape"]))
        cells = "".join(f"{_fmt_name(v) + (' (T=' + str(v['tokens']) + ')' if v else ''):<30}"
                        for v in r["variants"])
        print(f"{r['weight']:<36}{r['op'] or '':<8}{shape:<16}{r['sparsity']:>9.1%}  {cells}")


# ----------------------------------------------------------------------------- compile

class DispatchCompiled:
    """Compiled variants of one model; calling it runs the variant matching the input shapes."""

    def __init__(self, variants: list, source: str = "model"):
        self.variants = variants                      # [sparsec.api.Compiled]
        self.source = source
        self.signatures = [signature(v.example_inputs) for v in variants]
        self.report = dispatch_report([v.report for v in variants], self.signatures)
        self.example_inputs = tuple(v.example_inputs for v in variants)   # one tuple per variant
        self.calls = [0] * len(variants)              # how often each variant ran
        self.last_variant: int | None = None

    def variant_for(self, *inputs) -> int:
        return _pick(self.signatures, inputs, self.source)

    def __call__(self, *inputs):
        i = self.variant_for(*inputs)
        out = self.variants[i](*inputs)
        self.calls[i] += 1
        self.last_variant = i
        return out

    @property
    def timings(self) -> dict:
        return {f"v{i}": v.timings for i, v in enumerate(self.variants)}

    def save(self, path: str) -> str:
        """Write the dispatch artifact at ``path`` atomically (see the module docstring)."""
        from sparsec import __version__

        path = os.path.abspath(os.fspath(path))
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".sparsec-tmp-", dir=parent)
        try:
            entries, files, seen = [], {}, {}
            for i, v in enumerate(self.variants):
                d = f"v{i}"
                v.save(os.path.join(tmp, d))
                rel = f"{d}/{MANIFEST}"
                files[rel] = sha256(os.path.join(tmp, rel))
                entries.append({"inputs": v.compiled.plan["inputs"], "dir": d})
                _link_shared_weights(os.path.join(tmp, d), seen)
            manifest = {"artifact_version": ARTIFACT_VERSION, "kind": KIND, "sparsec_version": __version__,
                        "variants": entries, "report": self.report, "files": files}
            with open(os.path.join(tmp, MANIFEST), "w") as f:
                json.dump(manifest, f, indent=1)
            publish(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path


def _link_shared_weights(vdir: str, seen: dict) -> None:
    """Weight files of ``vdir`` byte-identical to one an earlier variant wrote become hard links to it (a dense
    layer, or a sparse one whose format the variants share, is stored once). ``seen``: sha256 -> path. Each
    variant's manifest still hashes its own path, so loading checks every variant's files as before."""
    m = read_manifest(vdir)
    for rel in m["weights"].values():
        full = os.path.join(vdir, rel)
        first = seen.setdefault(m["files"][rel], full)
        if first != full:
            try:
                tmp = full + ".link"
                os.link(first, tmp)
                os.replace(tmp, full)
            except OSError:             # no hard links on this filesystem: keep the copy
                pass


def _check_inputs_list(inputs_list, where: str) -> list[tuple]:
    if inputs_list is None or isinstance(inputs_list, torch.Tensor) or not isinstance(inputs_list, (list, tuple)):
        raise ParameterError(f"{where}: compile_dispatch needs a list of example-input tuples")
    out = []
    for i, entry in enumerate(inputs_list):
        if isinstance(entry, torch.Tensor):
            entry = (entry,)
        if not isinstance(entry, (tuple, list)) or not all(isinstance(x, torch.Tensor) for x in entry):
            raise ParameterError(f"{where}: inputs_list entry {i} must be a tuple of tensors")
        out.append(tuple(entry))
    if not out:
        raise ParameterError(f"{where}: compile_dispatch needs at least one example-input tuple")
    sigs = [signature(x) for x in out]
    for i, s in enumerate(sigs):
        j = sigs.index(s)
        if j != i:
            raise ParameterError(f"{where}: inputs_list entries {j} and {i} have the same shapes "
                                 f"{format_signature(s)}; each variant needs distinct input shapes")
    return out


def _check_same_weights(variants: list, where: str) -> None:
    """Every variant must compute the same function: the same (pruned) dense weights."""
    base = variants[0]
    for i, v in enumerate(variants[1:], 1):
        for r in base.report:
            a = base.graph.constant(r["weight"]).dense()
            b = v.graph.constant(r["weight"]).dense()
            if a.shape != b.shape or not torch.equal(a, b):
                raise ModelError(f"{where}: weight {r['weight']} differs between variant v0 and v{i} "
                                 f"after pruning; the variants would compute different functions")


def compile_dispatch(model_or_path, inputs_list=None, **compile_options) -> DispatchCompiled:
    """Compile one variant per example-input tuple with ``sparsec.api.compile``.

    ``model_or_path``: a model file (its ``example_inputs`` then its ``dispatch_inputs``
    are the variants unless ``inputs_list`` is given; the file is run once, so every
    variant has the same weights) or an ``nn.Module`` (``inputs_list`` required).
    ``compile_options`` are those of ``sparsec.api.compile`` (target, sparsity, pattern,
    format, spec, ...) and apply to every variant.
    """
    from sparsec.api import compile as sc_compile     # the compiler, needed only to build variants
    from sparsec.frontends.load import load_model

    if isinstance(model_or_path, (str, os.PathLike)):
        loaded = load_model(model_or_path)
        where, model = loaded.path, loaded.model
        if inputs_list is None:
            inputs_list = (loaded.example_inputs, *loaded.dispatch_inputs)
    elif isinstance(model_or_path, torch.nn.Module):
        where, model = type(model_or_path).__name__, model_or_path
    else:
        raise ParameterError(f"compile_dispatch: expected a model file path or an nn.Module, "
                             f"got {type(model_or_path).__name__}")
    inputs_list = _check_inputs_list(inputs_list, where)
    variants = []
    for i, inputs in enumerate(inputs_list):
        try:
            variants.append(sc_compile(model, inputs, **compile_options))
        except ModelError as exc:
            raise ModelError(f"{where} (dispatch variant v{i}, inputs "
                             f"{format_signature(signature(inputs))}): {exc}") from None
    _check_same_weights(variants, where)
    return DispatchCompiled(variants, where)


# ----------------------------------------------------------------------------- load

def is_dispatch_artifact(path) -> bool:
    """Whether ``path`` holds a dispatch artifact (its manifest has ``variants``); False on any doubt."""
    try:
        with open(os.path.join(os.fspath(path), MANIFEST)) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and "variants" in m


def read_dispatch_manifest(path: str) -> dict:
    mpath = os.path.join(path, MANIFEST)
    try:
        with open(mpath) as f:
            m = json.load(f)
    except (OSError, ValueError) as exc:
        raise SerializationError(f"{mpath}: unreadable or corrupt ({exc})") from None
    if not isinstance(m, dict) or m.get("artifact_version") != ARTIFACT_VERSION:
        raise SerializationError(f"{mpath}: unsupported artifact version "
                                 f"{m.get('artifact_version') if isinstance(m, dict) else None!r}")
    if not isinstance(m.get("files"), dict):
        raise SerializationError(f"{mpath}: missing field 'files'")
    variants = m.get("variants")
    if not isinstance(variants, list) or not variants:
        raise SerializationError(f"{mpath}: field 'variants' must be a non-empty list")
    for i, v in enumerate(variants):
        d = v.get("dir") if isinstance(v, dict) else None
        if not isinstance(d, str) or not d or d in (".", "..") or os.path.basename(d) != d:
            raise SerializationError(f"{mpath}: variant {i} has no valid 'dir' (a plain sub-directory name)")
        if not isinstance(v.get("inputs"), list):
            raise SerializationError(f"{mpath}: variant {i} ({d}) has no 'inputs' list")
        if f"{d}/{MANIFEST}" not in m["files"]:
            raise SerializationError(f"{mpath}: variant {i}: {d}/{MANIFEST} has no sha256 in 'files'")
    return m


class _Variant:
    """One verified sub-artifact, loaded (the library and the executor)."""

    def __init__(self, path: str, manifest: dict):
        import tvm.runtime

        from sparsec.backends.runtime import Executor

        self.path, self.manifest = path, manifest
        try:
            self.module = tvm.runtime.load_module(os.path.join(path, LIB))
        except Exception as exc:
            raise SerializationError(f"{os.path.join(path, LIB)}: cannot load ({exc})") from None
        self.executor = Executor(self.module, manifest["plan"], load_weights(path, manifest))

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["plan"]["inputs"]

    def __call__(self, *inputs):
        return self.executor(*inputs)


class DispatchLoaded:
    """A dispatch artifact loaded from disk; calling it runs the variant matching the input shapes.

    Every file of every variant is checked against its sha256 before any library is loaded.
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.path):
            raise SerializationError(f"{self.path}: not a sparsec artifact (no such directory)")
        self.manifest = read_dispatch_manifest(self.path)
        verify_files(self.path, self.manifest)                # the sub-manifests
        subs = []
        for i, v in enumerate(self.manifest["variants"]):
            sub = os.path.join(self.path, v["dir"])
            m = read_manifest(sub)
            verify_files(sub, m)                               # every file of this variant
            if spec_signature(m["plan"]["inputs"]) != spec_signature(v["inputs"]):
                raise SerializationError(f"{os.path.join(sub, MANIFEST)}: inputs "
                                         f"{format_signature(spec_signature(m['plan']['inputs']))} differ from "
                                         f"those declared for variant {i} in {os.path.join(self.path, MANIFEST)}")
            subs.append((sub, m))
        from sparsec.backends.cuda.executor import CudaLoaded, is_cuda_artifact

        shared: dict = {}       # --target cuda: weight files the variants share are on the GPU once
        self.variants = [CudaLoaded(sub, m, shared) if is_cuda_artifact(m) else _Variant(sub, m) for sub, m in subs]
        self.signatures = [spec_signature(v.inputs) for v in self.variants]
        self.calls = [0] * len(self.variants)
        self.last_variant: int | None = None

    @property
    def report(self) -> list[dict]:
        return self.manifest.get("report", [])

    @property
    def inputs(self) -> list[dict]:
        """The first variant's inputs (the model file's example inputs); see ``variant_inputs``."""
        return self.variants[0].inputs

    @property
    def variant_inputs(self) -> list[list[dict]]:
        return [v.inputs for v in self.variants]

    def variant_for(self, *inputs) -> int:
        return _pick(self.signatures, inputs, self.path)

    def __call__(self, *inputs):
        i = self.variant_for(*inputs)
        out = self.variants[i](*inputs)
        self.calls[i] += 1
        self.last_variant = i
        return out
