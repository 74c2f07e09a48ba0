"""Sparsity specs: per-layer pruning rules from a TOML or JSON file.

    # sparsity.toml
    exclude_first_conv = true      # defaults: the first conv and the output head stay dense
    exclude_head = true

    [[rule]]
    layers = "layers.*.intermediate"   # glob on the layer name (the weight name without ".weight")
    pattern = "2:4"                    # unstructured | N:M | block:RxC | group:G | dense

    [[rule]]
    layers = "*"
    pattern = "unstructured"
    sparsity = 0.9

The first rule matching a layer decides; a layer no rule matches stays as it
is. Embeddings are never pruned (they are not matmul weights). Every rule must
match at least one layer. Errors name the rule (its number and ``layers``).

``gmp_sparsity`` is the cubic gradual-magnitude-pruning schedule of Zhu &
Gupta, "To prune, or not to prune", for users who prune during training.
"""
from __future__ import annotations

import fnmatch
import json
import os
import tomllib
from dataclasses import dataclass

from sparsec.ir.errors import ConfigError, SparsecError
from sparsec.ir.formats import Dense
from sparsec.ir.graph import Graph
from sparsec.ir.ops import Op
from sparsec.passes.prune import parse_pattern, prune
from sparsec.passes.sparsify import prunable_weights


@dataclass(frozen=True)
class Rule:
    index: int
    layers: str
    pattern: str              # "dense" or a pattern parse_pattern accepts
    sparsity: float | None

    def where(self) -> str:
        return f"rule {self.index} (layers = {self.layers!r})"


@dataclass(frozen=True)
class Spec:
    rules: tuple[Rule, ...]
    exclude_first_conv: bool = True
    exclude_head: bool = True
    source: str = "<spec>"


def parse_spec(data: dict, source: str = "<spec>") -> Spec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings")
    unknown = set(data) - {"rule", "exclude_first_conv", "exclude_head"}
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {sorted(unknown)}")
    rules = []
    raw = data.get("rule", [])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: no [[rule]] entries")
    for i, r in enumerate(raw, 1):
        where = f"{source}: rule {i}"
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: expected a table")
        bad = set(r) - {"layers", "pattern", "sparsity"}
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}")
        layers = r.get("layers")
        if not isinstance(layers, str) or not layers:
            raise ConfigError(f"{where}: 'layers' (a glob on layer names) is required")
        where = f"{source}: rule {i} (layers = {layers!r})"
        pattern = r.get("pattern")
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: 'pattern' is required (unstructured, N:M, block:RxC, group:G or dense)")
        sparsity = r.get("sparsity")
        if pattern != "dense":
            try:
                p = parse_pattern(pattern)
            except SparsecError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if p.kind != "nm" and sparsity is None:
                raise ConfigError(f"{where}: pattern {pattern} needs a 'sparsity'")
        if sparsity is not None:
            if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not (0 <= sparsity < 1):
                raise ConfigError(f"{where}: sparsity must be a number in [0, 1), got {sparsity!r}")
            sparsity = float(sparsity)
        rules.append(Rule(i, layers, pattern, sparsity))
    for key in ("exclude_first_conv", "exclude_head"):
        if key in data and not isinstance(data[key], bool):
            raise ConfigError(f"{source}: {key} must be true or false")
    return Spec(tuple(rules), data.get("exclude_first_conv", True), data.get("exclude_head", True), source)


def load_spec(path: str) -> Spec:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such sparsity spec file")
    try:
        if path.endswith(".json"):
            with open(path) as f:
                data = json.load(f)
        else:
            with open(path, "rb") as f:
                data = tomllib.load(f)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    return parse_spec(data, path)


def layer_name(weight: str) -> str:
    return weight[: -len(".weight")] if weight.endswith(".weight") else weight


def default_exclusions(g: Graph, spec: Spec) -> set[str]:
    """The first conv's weight and the output head's (the last matmul whose result reaches an output)."""
    weights = [(n, c) for n, c in g.weights() if c.name in set(prunable_weights(g))]
    out = set()
    if spec.exclude_first_conv:
        convs = [c.name for n, c in weights if n.op == Op.CONV2D]
        if convs:
            out.add(convs[0])
    if spec.exclude_head and weights:
        # a head: a matmul node with a path to a graph output through non-matmul nodes only
        producers = {n.name: n for n in g.nodes}
        matmul_nodes = {n.name for n, _ in weights}
        reach, stack = set(), list(g.outputs)
        while stack:
            v = stack.pop()
            if v in reach or v not in producers:
                continue
            reach.add(v)
            if v not in matmul_nodes:
                stack.extend(producers[v].inputs)
        heads = [c.name for n, c in weights if n.name in reach]
        if heads:
            out.add(heads[-1])
    return out


def plan_spec(g: Graph, spec: Spec) -> dict[str, Rule]:
    """weight name -> the rule that decides it (excluded and unmatched weights are absent)."""
    weights = prunable_weights(g)
    excluded = default_exclusions(g, spec)
    used = {r.index: False for r in spec.rules}
    out = {}
    for w in weights:
        for r in spec.rules:
            if fnmatch.fnmatchcase(layer_name(w), r.layers) or fnmatch.fnmatchcase(w, r.layers):
                used[r.index] = True
                if w not in excluded:
                    out[w] = r
                break
    for r in spec.rules:
        if not used[r.index]:
            raise ConfigError(f"{spec.source}: {r.where()} matches no layer; layers are: "
                              f"{', '.join(layer_name(w) for w in weights[:12])}{' ...' if len(weights) > 12 else ''}")
    return out


def sparsify_by_spec(g: Graph, spec: Spec) -> Graph:
    for w, rule in plan_spec(g, spec).items():
        if rule.pattern == "dense":
            continue
        g = g.with_constant(w, Dense.from_dense(prune(g.constant(w).dense(), rule.pattern, rule.sparsity).weight))
    return g


def gmp_sparsity(step: int, final: float, begin_step: int, end_step: int, initial: float = 0.0,
                 frequency: int = 1) -> float:
    """Target sparsity at ``step``: s_f + (s_i - s_f)(1 - (t - t0)/(n·Δt))³, held between updates."""
    if not (0 <= initial <= final < 1):
        raise ConfigError(f"gmp_sparsity: need 0 <= initial <= final < 1, got {initial}, {final}")
    if end_step <= begin_step or frequency < 1:
        raise ConfigError("gmp_sparsity: need end_step > begin_step and frequency >= 1")
    if step < begin_step:
        return initial
    if step >= end_step:
        return final
    t = begin_step + ((step - begin_step) // frequency) * frequency
    frac = (t - begin_step) / (end_step - begin_step)
    return final + (initial - final) * (1.0 - frac) ** 3
