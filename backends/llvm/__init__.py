"""LLVM (CPU) backend: whole-graph compile, artifact, runtime."""
