"""Everything that makes TVM 0.27 compile CUDA on a machine without a GPU or driver.

TVM only embeds *compiled* device code (a fatbin) when ``libtvm_runtime_cuda.so``
is loaded, because that library registers ``ffi.Module.create.cuda``; without
it the CUDA codegen silently stores CUDA *source*, which the runtime-only TVM
on a GPU box cannot JIT. That library needs ``libcuda.so.1`` (the driver). So:

1. ``ensure_cuda_codegen()`` loads the real ``libcuda.so.1`` if there is one,
   else a stub with the same SONAME, built with gcc from the ``cu*`` symbols
   ``libtvm_runtime_cuda.so`` imports (each returns CUDA_ERROR_NO_DEVICE), then
   loads ``libtvm_runtime_cuda.so`` so the module factory registers. It must run
   before TVM first looks for the factory (``import tvm`` alone is fine).
2. The compile callback ``tvm_callback_cuda_compile`` is overridden to run
   nvcc (not NVRTC, which needs ``cuda-bindings``) for the arch of the target
   being built, producing a fatbin with SASS for that arch + its PTX.
3. ``build(mod, arch)`` builds inside ``with target:`` (``nvcc.compile_cuda``
   reads ``Target.current()`` even when the arch is given).

``ptx(...)`` / ``sass(...)`` return the device code of a built module for tests
that check which instructions a kernel uses.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading

from sparsec.ir.errors import ParameterError, SparsecError

ARCHS = ("sm_90", "sm_80", "sm_86", "sm_89", "sm_90a")   # sm_90a: Hopper arch-specific (wgmma), design="wgmma"
DEFAULT_ARCH = "sm_90"
# what libtvm_runtime_cuda.so of apache-tvm 0.27.0.post1 imports (used when binutils' nm is missing)
_KNOWN_CU_SYMBOLS = ("cuDeviceGetName", "cuFuncSetAttribute", "cuGetErrorName", "cuGetErrorString",
                     "cuLaunchKernelEx", "cuModuleGetFunction", "cuModuleLoadData", "cuModuleUnload",
                     "cuTensorMapEncodeTiled")


class CudaToolchainError(SparsecError):
    """CUDA code cannot be generated or compiled here (no nvcc, no gcc, TVM without CUDA)."""


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ParameterError(f"--arch {arch!r} is not supported; choose one of {', '.join(ARCHS)}")
    return arch


def tvm_lib_dir() -> str:
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise CudaToolchainError("TVM is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "lib")


def nvcc_path() -> str:
    p = shutil.which("nvcc") or (os.path.exists("/usr/local/cuda/bin/nvcc") and "/usr/local/cuda/bin/nvcc")
    if not p:
        raise CudaToolchainError("nvcc not found on PATH (install the CUDA toolkit, 12.x or 13.x)")
    return p


def _cu_symbols(lib: str) -> list[str]:
    try:
        out = subprocess.run(["nm", "-D", "--undefined-only", lib], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return list(_KNOWN_CU_SYMBOLS)
    syms = {ln.split()[-1] for ln in out.splitlines() if ln.split()}
    return sorted(s for s in syms if s.startswith("cu") and s[2:3].isupper())


def build_stub_libcuda(outdir: str) -> str:
    """gcc-build ``outdir/libcuda.so.1``: every driver symbol TVM's CUDA runtime imports, failing."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise CudaToolchainError("no C compiler (gcc) to build the stub libcuda.so.1")
    syms = _cu_symbols(os.path.join(tvm_lib_dir(), "libtvm_runtime_cuda.so"))
    src = os.path.join(outdir, "libcuda_stub.c")
    with open(src, "w") as f:
        f.write("/* stub driver for CUDA code generation without a GPU: 100 = CUDA_ERROR_NO_DEVICE */\n")
        f.writelines(f"int {s}(void) {{ return 100; }}\n" for s in syms)
    so = os.path.join(outdir, "libcuda.so.1")
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", so, src], check=True,
                   capture_output=True)
    return so


_lock = threading.Lock()
_state: dict = {}
_build_lock = threading.RLock()   # one build at a time sets the kernels' launch bounds for the postproc callback


def ensure_cuda_codegen() -> str:
    """Make TVM's CUDA codegen embed compiled device code; returns which libcuda was used."""
    with _lock:
        if "libcuda" in _state:
            return _state["libcuda"]
        try:
            ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
            which = "driver libcuda.so.1"
        except OSError:
            d = tempfile.mkdtemp(prefix="sparsec_libcuda_stub_")
            ctypes.CDLL(build_stub_libcuda(d), mode=ctypes.RTLD_GLOBAL)   # same SONAME: satisfies NEEDED
            which = "stub libcuda.so.1"
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
        import tvm
        import tvm_ffi

        if tvm.get_global_func("ffi.Module.create.cuda", True) is None:
            # tvm was imported before the driver stub: its backend autoload skipped the CUDA runtime
            ctypes.CDLL(os.path.join(tvm_lib_dir(), "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_GLOBAL)
        if tvm.get_global_func("ffi.Module.create.cuda", True) is None:
            raise CudaToolchainError("TVM's CUDA runtime did not register ffi.Module.create.cuda; "
                                     "CUDA code would be embedded as source")
        tvm_ffi.register_global_func("tvm_callback_cuda_compile", _compile_callback, override=True)
        tvm_ffi.register_global_func("tvm_callback_cuda_postproc", _postproc_callback, override=True)
        _state["libcuda"] = which
        return which


def gencode_flags(arch: str) -> list[str]:
    """SASS for ``arch`` plus its PTX (so newer GPUs can JIT it)."""
    sm = check_arch(arch).split("_")[1]
    return ["-gencode", f"arch=compute_{sm},code=sm_{sm}", "-gencode", f"arch=compute_{sm},code=compute_{sm}"]


def _current_arch() -> str:
    import tvm

    t = tvm.target.Target.current(allow_none=True)
    arch = str(t.attrs.get("arch", DEFAULT_ARCH)) if t is not None else DEFAULT_ARCH
    return arch


MIN_BLOCKS_ATTR = "tirx.launch_bounds_min_blocks_per_sm"
# PrimFunc attribute (sparsec's): "x,y,z", the thread-block cluster of its kernels, compiled in
# (``__cluster_dims__``: the launch needs no cluster attribute; the grid must be a multiple of it)
CLUSTER_ATTR = "sparsec.cluster_dims"
# PrimFunc attribute (sparsec's): the device kernels it splits into after the first (value 1), or all of them (value 2:
# the first overlaps the previous launch on the stream too), are launched with programmatic dependent launch (TVM
# 0.27's runtime launch tag, which its passes do not carry from the PrimFunc to the kernels)
PDL_ATTR = "sparsec.pdl"
PDL_TAG = "tirx.use_programtic_dependent_launch"     # (sic: TVM's spelling)


def _postproc_callback(code: str, target=None):
    """The generated CUDA source before nvcc: kernels whose PrimFunc carries ``MIN_BLOCKS_ATTR`` (TVM 0.27 does not
    carry it to the device kernels it splits off) get ``__launch_bounds__(threads, min blocks per SM)``; those whose
    PrimFunc carries ``CLUSTER_ATTR`` get ``__cluster_dims__(x, y, z)``."""
    import re

    for sym, minb in _state.get("min_blocks", {}).items():
        code = re.sub(rf"__launch_bounds__\((\d+)\) ({re.escape(sym)}_kernel(_\d+)?)\(",
                      rf"__launch_bounds__(\1, {int(minb)}) \2(", code)
    for sym, dims in _state.get("clusters", {}).items():
        code, n = re.subn(rf"(__launch_bounds__\([\d, ]+\)) ({re.escape(sym)}_kernel(_\d+)?)\(",
                          rf"\1 __cluster_dims__({dims}) \2(", code)
        if n == 0:
            raise RuntimeError(f"toolchain: {sym} asks for a thread-block cluster ({dims}) but has no kernel with "
                               f"launch bounds in the generated source")
    return code


def _compile_callback(code: str):
    from tvm.support import nvcc

    nvcc_path()
    return nvcc.compile_cuda(code, target_format="fatbin", compiler="nvcc", arch=gencode_flags(_current_arch()))


@functools.lru_cache(maxsize=None)
def cuda_target(arch: str = DEFAULT_ARCH):
    import tvm

    return tvm.target.Target({"kind": "cuda", "arch": check_arch(arch)})


def build(mod, arch: str = DEFAULT_ARCH):
    """``tvm.tirx.build`` for CUDA with the device code compiled to a fatbin by nvcc."""
    import tvm

    ensure_cuda_codegen()
    nvcc_path()
    target = cuda_target(arch)
    mins, pdl, clusters = {}, {}, {}
    for gv, f in mod.functions.items():
        sym = str(f.attrs.get("global_symbol", gv.name_hint)) if f.attrs is not None else gv.name_hint
        if f.attrs is not None and MIN_BLOCKS_ATTR in f.attrs:
            mins[sym] = int(f.attrs[MIN_BLOCKS_ATTR])
        if f.attrs is not None and CLUSTER_ATTR in f.attrs:
            dims = [int(d) for d in str(f.attrs[CLUSTER_ATTR]).split(",")]
            if len(dims) != 3 or min(dims) < 1 or dims[0] * dims[1] * dims[2] > 8:
                raise ValueError(f"toolchain: {sym}: cluster dims {f.attrs[CLUSTER_ATTR]!s} must be 'x,y,z' of at "
                                 f"most 8 blocks (the portable cluster size)")
            clusters[sym] = ", ".join(map(str, dims))
        if f.attrs is not None and f.attrs.get(PDL_ATTR):
            pdl[sym] = int(f.attrs[PDL_ATTR])
    with _build_lock:
        _state["min_blocks"] = mins
        _state["clusters"] = clusters
        try:
            with target:
                return _build_pdl(mod, target, pdl) if pdl else tvm.tirx.build(mod, target=target)
        finally:
            _state["min_blocks"] = {}
            _state["clusters"] = {}


def _build_pdl(mod, target, pdl: dict):
    """``tvm.tirx.build``'s steps (TVM 0.27, ``tvm/tirx/build.py``) with one more between the split and the device
    codegen: the kernels ``<sym>_kernel_<n>`` (every kernel of a function in ``pdl`` after its first; with
    ``pdl[sym] == 2`` also the first, ``<sym>_kernel``) get the programmatic-dependent-launch tag in their launch
    parameters (before ``tirx.use_dyn_shared_memory``, which must stay last), so the runtime launches them with
    ``cuLaunchKernelEx`` + programmatic stream serialization."""
    import importlib
    import re

    import tvm

    tb = importlib.import_module("tvm.tirx.build")
    host = tvm.target.Target("llvm" if tvm.runtime.enabled("llvm") else "c")
    mod = tvm.tirx.transform.BindTarget(target.with_host(host))(mod)
    pipeline, fin_host, fin_dev = tvm.tirx.get_default_tir_pipeline(target)
    mod = pipeline(mod)
    host_mod, dev_mods = tb.split_host_device_mods(mod)
    later = [re.escape(s) for s in sorted(pdl) if pdl[s] == 1]
    every = [re.escape(s) for s in sorted(pdl) if pdl[s] != 1]
    pat = re.compile("|".join((["^(" + "|".join(later) + r")_kernel_\d+$"] if later else [])
                              + (["^(" + "|".join(every) + r")_kernel(_\d+)?$"] if every else [])))
    tagged = 0
    for t, dm in dev_mods.items():
        funcs = {}
        for gv, f in dm.functions.items():
            if pat.match(gv.name_hint):
                tags = [str(x) for x in f.attrs["tirx.kernel_launch_params"]]
                dyn = [x for x in tags if x == "tirx.use_dyn_shared_memory"]
                tags = [x for x in tags if x != "tirx.use_dyn_shared_memory"] + [PDL_TAG] + dyn
                f = f.with_attr("tirx.kernel_launch_params", tags)
                tagged += 1
            funcs[gv] = f
        dev_mods[t] = tvm.IRModule(funcs, attrs=dm.attrs)
    if not tagged:
        raise RuntimeError(f"toolchain: {sorted(pdl)} asked for programmatic dependent launch but has no "
                           f"{'kernel' if every else 'second kernel'}")
    host_mod = fin_host()(host_mod)
    dev_mods = {t: fin_dev()(dm) for t, dm in dev_mods.items()}
    return tb.tir_to_runtime(host_mod, dev_mods, host)


def device_source(lib) -> str:
    """The generated CUDA C++ of a built module."""
    for m in [lib, *lib.imports]:
        try:
            src = m.inspect_source("cuda")
        except Exception:   # noqa: BLE001  (a module kind without CUDA source)
            continue
        if src and "__global__" in src:
            return src
    raise CudaToolchainError("the module holds no CUDA source")


def ptx(lib_or_source, arch: str = DEFAULT_ARCH) -> str:
    """PTX of a built module (or of CUDA source), compiled by nvcc for ``arch``."""
    from tvm.support import nvcc

    src = lib_or_source if isinstance(lib_or_source, str) else device_source(lib_or_source)
    ensure_cuda_codegen()
    with cuda_target(arch):
        return nvcc.compile_cuda(src, target_format="ptx", arch=check_arch(arch), compiler="nvcc").decode()


def ptx_entries(ptx_text: str) -> dict[str, str]:
    """Per kernel entry of a PTX module, its text (from after ``.entry NAME(`` to the next entry)."""
    import re

    ents = list(re.finditer(r"\.entry (\w+)\(", ptx_text))
    return {m.group(1): ptx_text[m.end(): ents[i + 1].start() if i + 1 < len(ents) else len(ptx_text)]
            for i, m in enumerate(ents)}


def ptxas_spills(lib_or_source, arch: str = DEFAULT_ARCH) -> dict[str, int]:
    """Per kernel, the bytes ``ptxas -v`` reports as spilled (stores + loads) when it assembles the module's PTX
    for ``arch`` (0: everything in registers)."""
    import re

    text = ptx(lib_or_source, arch)
    exe = os.path.join(os.path.dirname(os.path.realpath(nvcc_path())), "ptxas")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(text)
        out = subprocess.run([exe if os.path.exists(exe) else "ptxas", f"-arch={check_arch(arch)}", "-v", src, "-o",
                              os.path.join(d, "k.cubin")], capture_output=True, text=True, check=True).stderr
    spills, name = {}, None
    for line in out.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            spills[name] = int(m.group(1)) + int(m.group(2))
    return spills


def sass(lib_or_source, arch: str = DEFAULT_ARCH) -> str:
    """SASS disassembly (cuobjdump) of a module's device code compiled to a cubin for ``arch``."""
    from tvm.support import nvcc

    src = lib_or_source if isinstance(lib_or_source, str) else device_source(lib_or_source)
    ensure_cuda_codegen()
    with cuda_target(arch):
        cubin = nvcc.compile_cuda(src, target_format="cubin", arch=check_arch(arch), compiler="nvcc")
    tool = shutil.which("cuobjdump") or os.path.join(os.path.dirname(nvcc_path()), "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout


def fatbin_embedded(so_path: str) -> bool:
    """True when an exported library carries a fatbin (and no CUDA source to JIT)."""
    blob = open(so_path, "rb").read()
    return bytes.fromhex("50ed55ba") in blob and b"__global__" not in blob
