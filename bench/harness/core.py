"""What every benchmark scenario shares: the machine, the cores, scenario files, figures, results.

- `machine_info()`: cores, CPU model, Python, the versions of the libraries on the hot path, and
  the source revision (read from `.git` without running git), attached to every result line.
- `Cores`: which core the engine, the simulator and the load generator are pinned to. With two or
  more cores the engine and the simulator each get their own; the load generator shares the
  simulator's core unless a third one exists (it is cheap next to the engine, and the engine is
  the process under test).
- `load_scenario(name_or_path, size)`: a scenario TOML file (`bench/scenarios/<name>.toml`) with a
  `[smoke]` and a `[full]` table; the chosen table overrides the file's top-level values.
- `summarize(values)`: p50 / p90 / p99 / max of a list of samples (nearest-rank percentiles).
- `rss_bytes()`, `cpu_seconds()`: this process's resident memory and CPU time.
- `append_results(path, records)`: one JSON line per measurement.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent  # bench/ (scenarios/, faults/, results/)
SCENARIO_DIR = BENCH_DIR / "scenarios"
DEFAULT_OUT = BENCH_DIR / "results" / "latest.jsonl"
SIZES = ("smoke", "full")
LIBRARIES = ("trio", "h2", "hpack", "h11", "hypercorn", "msgspec", "cryptography", "aioapns")
LOOPBACK = "127.0.0.1"


class ScenarioError(ValueError):
    """A scenario file is missing, not TOML, or lacks the requested size."""


# -- the machine -----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_dirs(start: Path = BENCH_DIR) -> tuple[Path, Path] | None:
    """(the folder holding HEAD, the folder holding the refs) of the checkout around `start`:
    the same `.git` folder, or for a linked worktree (`.git` is a file naming its folder) that
    folder and the main repository's (its `commondir`)."""
    for folder in (start, *start.parents):
        git = folder / ".git"
        if git.is_dir():
            return git, git
        if git.is_file():
            try:
                text = git.read_text().strip()
                if not text.startswith("gitdir: "):
                    return None
                own = (folder / text[8:]).resolve()
                common = own / "commondir"
                shared = (own / common.read_text().strip()).resolve() if common.exists() else own
            except OSError:
                return None
            return own, shared
    return None


def source_revision(start: Path = BENCH_DIR) -> str | None:
    """The checked-out commit, read from `HEAD` (and the ref it names), or None."""
    found = git_dirs(start)
    if found is None:
        return None
    own, git = found
    try:
        head = (own / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        packed = git / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape the figures (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (attached to every result line)."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(usable_cores()),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": library_versions(),
        "commit": source_revision(),
    }


# -- cores -----------------------------------------------------------------------------------------


def usable_cores() -> list[int]:
    """The cores this process may run on, in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class Cores:
    """Where each process runs; None means not pinned (a single-core machine)."""

    engine: int | None
    simulator: int | None
    generator: int | None

    @classmethod
    def plan(cls) -> Cores:
        """Engine and simulator on their own cores when there are two; a third for the generator."""
        cores = usable_cores()
        if len(cores) < 2 or not hasattr(os, "sched_setaffinity"):
            return cls(None, None, None)
        generator = cores[2] if len(cores) > 2 else cores[1]
        return cls(cores[0], cores[1], generator)

    def describe(self) -> dict[str, Any]:
        """The pinning as stated in every result."""
        return {
            "engine_core": self.engine,
            "simulator_core": self.simulator,
            "generator_core": self.generator,
            "pinned": self.engine is not None,
        }


def pin(core: int | None) -> bool:
    """Pin this process to `core`; False when not asked or not possible."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return False
    if core not in os.sched_getaffinity(0):
        return False
    os.sched_setaffinity(0, {core})
    return True


# -- scenario files --------------------------------------------------------------------------------


def scenario_path(name_or_path: str | Path) -> Path:
    """`bench/scenarios/<name>.toml` for a bare name, else the path as given."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        return path
    return SCENARIO_DIR / f"{name_or_path}.toml"


def load_scenario(name_or_path: str | Path, size: str) -> dict[str, Any]:
    """The scenario's settings at `size`: top-level values, overridden by the `[size]` table."""
    if size not in SIZES:
        raise ScenarioError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    path = scenario_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    sized = data.get(size)
    if not isinstance(sized, dict):
        raise ScenarioError(f"{path}: no [{size}] table")
    base = {k: v for k, v in data.items() if k not in SIZES}
    return {**base, **sized, "size": size, "file": str(path)}


# -- figures ---------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of an ascending sequence (not empty)."""
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Iterable[float], *, scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """`count`, `p50`, `p90`, `p99`, `max` (and `mean`) of `values` times `scale`."""
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50), digits),
        "p90": round(percentile(ordered, 90), digits),
        "p99": round(percentile(ordered, 99), digits),
        "max": round(ordered[-1], digits),
        "mean": round(sum(ordered) / len(ordered), digits),
    }


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc), else its peak (ru_maxrss)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used."""
    return time.process_time()


def now_iso() -> str:
    """The wall-clock time of a result, UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- results ---------------------------------------------------------------------------------------


def append_results(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Append one JSON line per record to `path` (folders created); returns the lines written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("a", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=False, default=str) + "\n")
            n += 1
    return n


def record(
    scenario: str,
    measurement: str,
    *,
    settings: dict[str, Any],
    figures: dict[str, Any],
    machine: dict[str, Any],
    cores: Cores,
    measured: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """One result line: what was measured, on what, with which settings, and the figures."""
    return {
        "scenario": scenario,
        "measurement": measurement,
        "at": now_iso(),
        "measured": measured,
        "settings": settings,
        "figures": figures,
        "notes": list(notes),
        "cores": cores.describe(),
        "machine": machine,
    }


REQUIRED_KEYS = ("scenario", "measurement", "at", "measured", "settings", "figures", "machine")
"""The keys every result line carries (checked by the smoke tests)."""


@dataclass(frozen=True, slots=True)
class RunEnv:
    """What a scenario run gets from the command: where to work, the machine, and a logger."""

    folder: Path
    machine: dict[str, Any]
    cores: Cores
    progress: Callable[[str], None]
