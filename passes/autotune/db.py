"""The tuning database: one JSON-lines file of measured (layer, format, knobs) trials.

Each line is one measurement record::

    {"key": {...}, "kd": <key digest>, "ld": <layer digest>, "knobs": {...},
     "status": "ok" | "wrong" | "error" | "timeout", "time_s": float | null,
     "times_s": [...], "error": str, "runner": str, "host": str, "when": str,
     "crc": <crc32 of the line without "crc">}

The key (``TuningKey``) is what makes a time reusable: op, shape (O, K, T),
dtype, format and its parameters, the pattern signature (the fraction of the
matrix the format stores, which is what its kernel's work depends on), the
target (LLVM/CUDA target string) and the machine's features (CPU model and
ISA flags, or the RPC device key), and the sparsec/TVM versions. Any of
these differing is a miss.

Crash safety: a record is one ``write`` of one line followed by ``fsync``,
under an advisory lock; every line carries a CRC. A run killed mid-write
leaves at most a partial last line; readers skip lines that fail to parse or
whose CRC does not match (counted in ``TuningDB.skipped``), and the next
append first truncates a partial tail back to the last newline. ``merge``
(files from several machines) writes a new file to a temp path, fsyncs it
and renames it over the destination.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import zlib
from dataclasses import asdict, dataclass, field

from sparsec.ir.errors import SerializationError

SCHEMA = 1

MIN_GAIN = 0.02          # a tuned configuration replaces the default only when it is this much faster ...
CONFIRM = ":confirm"     # runner suffix of the interleaved re-measurement of a search's finalists
INCUMBENT = ":confirm-default"   # ... of the finalist that is its format's (or site's) default knobs


def beats(a: "Record", b: "Record", min_gain: float = MIN_GAIN) -> bool:
    """Whether ``a`` is reliably faster than ``b``: its median at least ``min_gain`` lower and, when both
    have 4+ samples, its upper quartile below ``b``'s lower quartile (their interquartile ranges apart).
    A tuned schedule must clear this to replace the default: measured 10-70 us kernels otherwise picked
    configurations up to 8 % slower than the default on a re-measurement (benchmarks/autotune_cpu.py,
    2026-11-23)."""
    import statistics

    if a.time_s is None or b.time_s is None or a.time_s > b.time_s * (1.0 - min_gain):
        return False
    if len(a.times_s) >= 4 and len(b.times_s) >= 4:
        qa, qb = statistics.quantiles(a.times_s, n=4), statistics.quantiles(b.times_s, n=4)
        return qa[2] < qb[0]
    return True


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def jsonable(obj):
    """Tuples -> lists, recursively (what a JSON round trip gives back)."""
    return json.loads(_canon(obj))


def canon_knobs(knobs: dict | None) -> str:
    return _canon(dict(sorted((knobs or {}).items())))


@dataclass(frozen=True)
class TuningKey:
    """Where a measured time is valid. ``layer()`` drops the format (a layer's candidates share it)."""

    op: str                 # "matmul"
    shape: tuple            # (O, K, T)
    dtype: str
    format: str
    params: tuple           # ((name, value), ...) sorted, tuple values
    pattern: str            # pattern signature, e.g. "stored=0.10"
    target: str             # canonical target string
    features: str           # CPU model + ISA flags digest, or "rpc:<key>"
    versions: str           # "sparsec=0.1.0;tvm=0.27.0.post1"

    def to_json(self) -> dict:
        return jsonable(asdict(self))

    @classmethod
    def from_json(cls, d: dict) -> "TuningKey":
        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v
        return cls(d["op"], tup(d["shape"]), d["dtype"], d["format"], tup(d["params"]), d["pattern"],
                   d["target"], d["features"], d["versions"])

    def digest(self) -> str:
        return hashlib.sha1(_canon(self.to_json()).encode()).hexdigest()[:20]

    def layer_digest(self) -> str:
        """Digest of the key without format, params and pattern: one per (layer shape, machine, versions)."""
        d = self.to_json()
        for k in ("format", "params", "pattern"):
            d.pop(k)
        return hashlib.sha1(_canon(d).encode()).hexdigest()[:20]


@dataclass
class Record:
    key: TuningKey
    knobs: dict
    status: str                      # ok | wrong | error | timeout
    time_s: float | None = None
    times_s: list = field(default_factory=list)
    error: str = ""
    runner: str = "local"
    host: str = field(default_factory=socket.gethostname)
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.time_s is not None

    def ident(self) -> tuple:
        """What makes two records the same measurement (for merging without duplicates)."""
        return (self.key.digest(), canon_knobs(self.knobs), self.status, self.time_s, self.runner, self.host, self.when)

    def to_line(self) -> str:
        d = {"v": SCHEMA, "key": self.key.to_json(), "kd": self.key.digest(), "ld": self.key.layer_digest(),
             "knobs": jsonable(dict(sorted(self.knobs.items()))), "status": self.status, "time_s": self.time_s,
             "times_s": list(self.times_s), "error": self.error[:500], "runner": self.runner, "host": self.host,
             "when": self.when}
        body = _canon(d)
        d["crc"] = zlib.crc32(body.encode())
        return _canon(d) + "\n"

    @classmethod
    def from_line(cls, line: str) -> "Record":
        """Parse one line; raises ValueError when it is malformed or its CRC does not match."""
        d = json.loads(line)
        if not isinstance(d, dict) or "crc" not in d:
            raise ValueError("no crc")
        crc = d.pop("crc")
        if zlib.crc32(_canon(d).encode()) != crc:
            raise ValueError("crc mismatch")
        if d.get("v") != SCHEMA:
            raise ValueError(f"schema {d.get('v')!r}")
        return cls(TuningKey.from_json(d["key"]), d["knobs"], d["status"], d["time_s"], d.get("times_s", []),
                   d.get("error", ""), d.get("runner", "local"), d.get("host", ""), d.get("when", ""))


class TuningDB:
    """The records of one file, indexed by key digest; appends go straight to the file."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.records: list[Record] = []
        self.by_key: dict[str, list[Record]] = {}
        self.by_layer: dict[str, list[Record]] = {}
        self.skipped = 0                   # lines dropped as truncated or corrupt
        self._seen: set = set()
        self.reload()

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"TuningDB({self.path!r}, {len(self.records)} records, {self.skipped} skipped)"

    def reload(self) -> None:
        self.records, self.by_key, self.by_layer, self._seen, self.skipped = [], {}, {}, set(), 0
        if not os.path.exists(self.path):
            return
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise SerializationError(f"tuning database {self.path}: cannot read: {exc}") from exc
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                rec = Record.from_line(raw.decode("utf-8"))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.skipped += 1
                continue
            self._index(rec)

    def _index(self, rec: Record) -> bool:
        ident = rec.ident()
        if ident in self._seen:
            return False
        self._seen.add(ident)
        self.records.append(rec)
        self.by_key.setdefault(rec.key.digest(), []).append(rec)
        self.by_layer.setdefault(rec.key.layer_digest(), []).append(rec)
        return True

    # -- writing ---------------------------------------------------------------------------
    def append(self, rec: Record) -> None:
        """Append one record durably (one write + fsync, under a lock; a partial tail is repaired first)."""
        import fcntl

        line = rec.to_line().encode()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SerializationError(f"tuning database {self.path}: cannot open for append: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.lseek(fd, 0, os.SEEK_END)
            if size > 0:
                os.lseek(fd, size - 1, os.SEEK_SET)
                if os.read(fd, 1) != b"\n":
                    _truncate_to_last_newline(fd, size)
                    size = os.lseek(fd, 0, os.SEEK_END)
            os.lseek(fd, size, os.SEEK_SET)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._index(rec)

    def extend(self, recs) -> None:
        for r in recs:
            self.append(r)

    def drop_keys(self, digests) -> int:
        """Remove every record of these key digests (a re-measured cell replaces its earlier run instead of
        mixing with it): the file is rewritten to a temporary path and renamed over, under the append lock.
        Returns the number of records removed."""
        import fcntl

        digests = set(digests)
        if not os.path.exists(self.path) or not digests & set(self.by_key):
            return 0
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.reload()                       # what other writers appended since
            keep = [r for r in self.records if r.key.digest() not in digests]
            gone = len(self.records) - len(keep)
            tmp = f"{self.path}.tmp{os.getpid()}"
            try:
                with open(tmp, "w") as f:
                    f.write("".join(r.to_line() for r in keep))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise SerializationError(f"tuning database {self.path}: cannot rewrite: {exc}") from exc
        finally:
            os.close(fd)
        self.reload()
        return gone

    # -- reading ---------------------------------------------------------------------------
    def for_key(self, key: TuningKey) -> list[Record]:
        return list(self.by_key.get(key.digest(), []))

    def best(self, key: TuningKey, condition: str | None = None) -> Record | None:
        """The fastest configuration of ``key`` none of whose records failed (wrong/error/timeout: a
        flaky kernel never counts), among the confirmation measurements when there are some (the
        interleaved re-measurement of the finalists decides, not a lucky first sample). When the
        default configuration was confirmed too (``INCUMBENT``), another one wins only if it ``beats``
        it (a margin beyond the measurement's spread); the latest confirmation of each counts.
        ``condition``: only the records measured under it (their runner up to the ``CONFIRM`` suffix)."""
        recs = self.by_key.get(key.digest(), [])
        if condition is not None:
            recs = [r for r in recs if r.runner.split(CONFIRM)[0] == condition]
        bad = {canon_knobs(r.knobs) for r in recs if r.status != "ok"}
        ok = [r for r in recs if r.ok and canon_knobs(r.knobs) not in bad]
        confirmed = [r for r in ok if CONFIRM in r.runner]
        if not confirmed:
            return min(ok, key=lambda r: r.time_s) if ok else None
        latest = {canon_knobs(r.knobs): r for r in confirmed}           # file order: the last one wins
        fastest = min(latest.values(), key=lambda r: r.time_s)
        incumbent = [r for r in latest.values() if r.runner.endswith(INCUMBENT)]
        if incumbent and fastest is not incumbent[-1] and not beats(fastest, incumbent[-1]):
            return incumbent[-1]
        return fastest

    def measured(self, key: TuningKey, knobs: dict) -> Record | None:
        want = canon_knobs(knobs)
        for r in self.by_key.get(key.digest(), []):
            if canon_knobs(r.knobs) == want:
                return r
        return None

    def for_layer(self, layer_digest: str) -> list[Record]:
        return list(self.by_layer.get(layer_digest, []))


def _truncate_to_last_newline(fd: int, size: int) -> None:
    """Cut a partial last line (a killed writer) so the next record starts on its own line."""
    pos, chunk = size, 4096
    while pos > 0:
        start = max(0, pos - chunk)
        os.lseek(fd, start, os.SEEK_SET)
        buf = os.read(fd, pos - start)
        i = buf.rfind(b"\n")
        if i >= 0:
            os.ftruncate(fd, start + i + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


def merge(dest: str, *sources: str) -> TuningDB:
    """Union of the records of ``dest`` (if it exists) and ``sources`` into ``dest``, atomically.

    Records from other machines keep their key (their target/features), so they
    only answer lookups on a matching machine; duplicates are dropped.
    """
    import tempfile

    out = TuningDB.__new__(TuningDB)
    out.path = os.path.abspath(dest)
    out.records, out.by_key, out.by_layer, out._seen, out.skipped = [], {}, {}, set(), 0
    for p in (dest, *sources):
        if not os.path.exists(p):
            if p != dest:
                raise SerializationError(f"merge: tuning database {p} does not exist")
            continue
        src = TuningDB(p)
        out.skipped += src.skipped
        for r in src.records:
            out._index(r)
    d = os.path.dirname(out.path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tuning.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            for r in out.records:
                f.write(r.to_line())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out.path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out
