"""The format cost model for ``--target arm``: the llvm-mca static estimate (backends/arm/mca.py).

``select_formats`` scores each candidate with ``predict(format_object, tokens)``
(``needs_packed``: it gets the packed candidate, since the estimate reads the
kernel the format's meta generates). Seconds = estimated cycles / clock; only
the ranking matters for the choice, the seconds make the explain report readable.
"""
from __future__ import annotations

from sparsec.backends.arm.mca import estimate
from sparsec.passes.cost.targets import TARGETS


class ArmCost:
    needs_packed = True

    def __init__(self, cpu: str | None = None):
        from sparsec.backends.arm.target import cpu_info

        self.cpu = cpu_info(cpu).name
        self.ghz = TARGETS[self.cpu].ghz if self.cpu in TARGETS else 2.5
        self.source = f"llvm-mca static estimate ({self.cpu}, {self.ghz} GHz)"

    def predict(self, fmt, tokens: int) -> float:
        return estimate(fmt, tokens, self.cpu).cycles / (self.ghz * 1e9)
