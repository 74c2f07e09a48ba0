"""Maps the design card's root folders into one importable package.

`ir/` becomes `sparsec.ir`, `sim/sat/` becomes `sparsec.sim.sat`, and so on; any
new sub-package with an ``__init__.py`` is picked up without editing this file.
"""
from setuptools import find_packages, setup

ROOTS = ["ir", "passes", "backends", "sim", "frontends"]

packages = ["sparsec"] + [f"sparsec.{p}" for p in find_packages("sparsec")]
package_dir = {"sparsec": "sparsec"}
for root in ROOTS:
    packages.append(f"sparsec.{root}")
    package_dir[f"sparsec.{root}"] = root
    packages += [f"sparsec.{root}.{p}" for p in find_packages(root)]

setup(packages=packages, package_dir=package_dir,
      package_data={"": ["*.toml", "*.json", "*.jsonl", "*.mtx", "*.c", "*.h"]})
