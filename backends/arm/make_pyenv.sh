#!/usr/bin/env bash
# An aarch64 CPython 3.11 + TVM runtime-only bundle + numpy, to run artifacts through the real
# TVM runtime under qemu-aarch64 (no torch, no sparsec on the "device").
#   usage: make_pyenv.sh [DIR]     (default ${SPARSEC_CACHE_DIR:-$HOME/.cache/sparsec}/arm-python)
# Unpacks Debian arm64 python3.11 debs (apt-get download + dpkg -x; nothing is installed system-wide),
# takes tvm/tvm_ffi from the aarch64 PyPI wheels (pinned like the project), numpy from its aarch64 wheel.
# Idempotent: exits at once when DIR/.complete exists.
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
ROOT=$(realpath "$HERE/../..")
W=$(realpath -m "${1:-${SPARSEC_CACHE_DIR:-$HOME/.cache/sparsec}/arm-python}")
[ -f "$W/.complete" ] && { echo "$W"; exit 0; }
PY=${PYTHON:-$ROOT/.venv/bin/python}; [ -x "$PY" ] || PY=python3
BUNDLE_SH=$HERE/make_tvm_runtime_bundle.sh   # copy of ../shared/tvm/make_tvm_runtime_bundle.sh
rm -rf "$W.tmp"; mkdir -p "$W.tmp"/{lists,cache/archives/partial,debs,root}
T=$W.tmp
o="-oAPT::Architecture=arm64 -oAPT::Architectures=arm64 -oDir::State::Lists=$T/lists -oDir::Cache=$T/cache"
apt-get $o update -qq
(cd "$T/debs" && apt-get $o download -qq python3.11-minimal libpython3.11-minimal libpython3.11-stdlib \
   zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libssl3 libuuid1 libcrypt1 libncursesw6 libtinfo6 \
   libreadline8 libsqlite3-0 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 \
   libcom-err2 libkeyutils1 libdb5.3 libgdbm6 libstdc++6 libgcc-s1 2>/dev/null)
for f in "$T"/debs/*.deb; do dpkg -x "$f" "$T/root"; done
PLAT=aarch64 CUDART=none PYTHON=$PY WHEEL_DIR=$T/wheels bash "$BUNDLE_SH" "$T/bundle" 3.11 >/dev/null
"$PY" -m pip install -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
   --python-version 3.11 --implementation cp --target "$T/site" numpy ml_dtypes typing_extensions
rm -rf "$T"/{lists,cache,debs,wheels}
touch "$T/.complete"
rm -rf "$W"; mv "$T" "$W"
echo "$W"
