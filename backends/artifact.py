"""The artifact: a directory written atomically (temp dir + rename).

    out.sparsec/
      manifest.json      graph (IR text), executor plan, formats, target, versions,
                         report, and the sha256 of every other file
      lib.so             the exported TVM library
      weights/*.npy      every constant buffer as a plain array (no pickle)

``load_artifact`` checks every hash before anything is used and needs only the
TVM runtime (``tvm.runtime.load_module``), numpy and torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import torch

from sparsec.ir.errors import SerializationError

MANIFEST = "manifest.json"
LIB = "lib.so"
ARTIFACT_VERSION = 1
_RAW16 = {torch.bfloat16: torch.int16}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weight_file(key: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "__" for ch in key)
    return f"weights/{safe}.npy"


def write_artifact(path: str, module, plan: dict, consts: dict[str, torch.Tensor], info: dict,
                   export=None) -> str:
    """Write the artifact at ``path`` atomically; ``info`` goes into the manifest as is.

    ``export(module, file)`` writes the library (default ``module.export_library``,
    a cross compiler for other targets).
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sparsec-tmp-", dir=parent)
    try:
        (export or (lambda m, f: m.export_library(f)))(module, os.path.join(tmp, LIB))
        os.makedirs(os.path.join(tmp, "weights"))
        weight_files = {}
        for key, t in consts.items():
            rel = _weight_file(key)
            if rel in weight_files.values():
                raise SerializationError(f"two constants map to the same file {rel}")
            t = t.contiguous()
            arr = t.view(_RAW16[t.dtype]).numpy() if t.dtype in _RAW16 else t.numpy()
            np.save(os.path.join(tmp, rel), arr, allow_pickle=False)
            weight_files[key] = rel
        files = {}
        for root, _, names in os.walk(tmp):
            for n in names:
                full = os.path.join(root, n)
                files[os.path.relpath(full, tmp)] = sha256(full)
        manifest = {"artifact_version": ARTIFACT_VERSION, **info, "plan": plan, "weights": weight_files,
                    "files": dict(sorted(files.items()))}
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
        publish(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def publish(tmp: str, path: str) -> None:
    """Move the finished directory ``tmp`` to ``path``; an existing one is moved aside, then swapped."""
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=".sparsec-old-", dir=os.path.dirname(path))
        os.rename(path, os.path.join(old, "a"))
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def read_manifest(path: str) -> dict:
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise SerializationError(f"{path}: not a sparsec artifact (no such directory)")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise SerializationError(f"{mpath}: missing; {path} is not a sparsec artifact") from None
    except (OSError, ValueError) as exc:
        raise SerializationError(f"{mpath}: unreadable or corrupt ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("artifact_version") != ARTIFACT_VERSION:
        raise SerializationError(f"{mpath}: unsupported artifact version "
                                 f"{manifest.get('artifact_version') if isinstance(manifest, dict) else None!r}")
    for key in ("plan", "weights", "files"):
        if key not in manifest:
            raise SerializationError(f"{mpath}: missing field {key!r}")
    return manifest


def verify_files(path: str, manifest: dict) -> None:
    for rel, digest in manifest["files"].items():
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            raise SerializationError(f"{full}: missing from the artifact")
        if sha256(full) != digest:
            raise SerializationError(f"{full}: sha256 mismatch (file was modified or truncated)")


def load_weights(path: str, manifest: dict) -> dict[str, torch.Tensor]:
    values = manifest["plan"]["values"]
    dtypes = {v["const"]: v["dtype"] for v in values.values() if v["kind"] == "const"}
    out = {}
    for key, rel in manifest["weights"].items():
        try:
            arr = np.load(os.path.join(path, rel), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SerializationError(f"{os.path.join(path, rel)}: cannot read ({exc})") from None
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if dtypes.get(key) == "bfloat16":
            t = t.view(torch.bfloat16)
        out[key] = t
    return out


class LoadedArtifact:
    """A compiled model loaded from disk; call it with tensors (torch or numpy)."""

    def __init__(self, path: str):
        import tvm.runtime

        from sparsec.backends.runtime import Executor

        self.path = os.path.abspath(os.fspath(path))
        self.manifest = read_manifest(self.path)
        verify_files(self.path, self.manifest)
        try:
            self.module = tvm.runtime.load_module(os.path.join(self.path, LIB))
        except Exception as exc:
            raise SerializationError(f"{os.path.join(self.path, LIB)}: cannot load ({exc})") from None
        self.executor = Executor(self.module, self.manifest["plan"], load_weights(self.path, self.manifest))

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["plan"]["inputs"]

    def __call__(self, *inputs):
        return self.executor(*inputs)


def load_artifact(path) -> LoadedArtifact:
    from sparsec.backends.dispatch import DispatchLoaded, is_dispatch_artifact

    if is_dispatch_artifact(path):      # one variant per input shape (docs/dispatch.md)
        return DispatchLoaded(path)
    from sparsec.backends.cuda.executor import CudaLoaded, is_cuda_artifact

    if is_cuda_artifact(read_manifest(os.path.abspath(os.fspath(path)))):   # --target cuda: runs on the GPU
        return CudaLoaded(path)
    return LoadedArtifact(path)
