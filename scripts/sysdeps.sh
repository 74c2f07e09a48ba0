#!/usr/bin/env bash
# Installs the Debian packages sparsec's tests need, when missing. Idempotent.
# Each backend adds what it needs to PACKAGES with the command that proves it is there.
set -euo pipefail
PACKAGES=()
need() {  # need <command> <debian package>
  command -v "$1" >/dev/null 2>&1 || PACKAGES+=("$2")
}
# (filled in by the backends that need system tools)
# aarch64 backend (backends/arm): cross compiler + libc, qemu-user, llvm-mca for the static estimate
need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
[ -f /usr/aarch64-linux-gnu/lib/libc.so.6 ] || PACKAGES+=(libc6-dev-arm64-cross)
need qemu-aarch64 qemu-user
need llvm-mca-19 llvm-19   # 19: has Neoverse-N1 / Cortex-A76 scheduling models (14 maps them to A57)
if [ ${#PACKAGES[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "sysdeps: installing ${PACKAGES[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi
