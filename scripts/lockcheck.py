"""Whether requirements.lock was made from pyproject.toml's dependencies as they are now.

Standard library only: scripts/setup.sh runs it with the system Python before it installs anything.
  python scripts/lockcheck.py            exit 0 when the lock matches; else one sentence, exit 1
  python scripts/lockcheck.py --header   print the line scripts/lock.sh writes atop the lock
  python scripts/lockcheck.py --torch    print the torch release the environment pins
  python scripts/lockcheck.py --environment-yml   print environment.yml as made from the lock
  python scripts/lockcheck.py --installed   (run by the venv's Python) exit 1 unless every package
                                            the lock names is installed at the lock's version
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# The extras the lock covers: what the tests and the paper-scale run install. slurm repeats dev's
# submitit launcher.
EXTRAS = ("dev", "paper")
MARK = "# made-from: "
# torch is installed apart from the lock (scripts/setup.sh): its build differs by machine (the CPU
# wheel here, a CUDA wheel on a GPU node). This is the one place its release is pinned.
TORCH = "2.13.0"
REFRESH = "bash scripts/lock.sh"


def normalise(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)[1]).lower()


def requirements() -> list[str]:
    """pyproject.toml's dependencies and those of the locked extras, as written."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(r for e in EXTRAS for r in extras.get(e, []))]


def spec() -> list[str]:
    """What the lock is made from: the Python range and the requirements, sorted (the lock's header)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return sorted({f"python{project.get('requires-python', '')}", *requirements()})


def recorded() -> list[str] | None:
    """The spec the lock's header says it was made from (None when it has none)."""
    for line in LOCK.read_text().splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return None


def locked() -> dict[str, str]:
    """name -> exact version of every package the lock pins."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", LOCK.read_text(), re.M)
    return {normalise(n): v for n, v in pins}


def problem() -> str | None:
    """One sentence saying how the lock disagrees with pyproject.toml, or None."""
    if not LOCK.is_file():
        return f"requirements.lock is missing; make it with `{REFRESH}`."
    # torch is installed apart, pinned (scripts/setup.sh): its build differs by machine (CPU or CUDA).
    absent = sorted({normalise(r) for r in requirements()} - set(locked()) - {"torch"})
    if absent:
        return (
            f"requirements.lock does not pin {', '.join(absent)}, which pyproject.toml requires; "
            f"refresh it with `{REFRESH}`."
        )
    before, now = recorded() or [], spec()
    if before != now:
        changed = [f"+{r}" for r in now if r not in before] + [f"-{r}" for r in before if r not in now]
        return (
            f"requirements.lock was made from other pyproject.toml requirements than today's "
            f"({', '.join(changed)}); refresh it with `{REFRESH}`."
        )
    return None


def environment_yml() -> str:
    """The conda environment that installs exactly the lock's versions (conda's pip section cannot
    mix hashed and unhashed lines, so it pins without hashes; scripts/setup.sh checks the hashes)."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*==[^\s\\;]+)", LOCK.read_text(), re.M)
    lines = [
        "# Conda alternative to scripts/setup.sh, made from requirements.lock by `bash scripts/lock.sh`",
        "# (do not edit: tests/test_packaging.py checks that the two agree).",
        "name: edgeai-repro",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
        f"      - torch=={TORCH}",
        *(f"      - {pin}" for pin in pins),
        "      - -e .",
    ]
    return "\n".join(lines) + "\n"


def installed_mismatch() -> list[str]:
    """The lock's packages that this interpreter has at another version, or lacks."""
    from importlib import metadata

    have = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return [
        f"{n} {have.get(n, 'missing')} (lock: {v})" for n, v in sorted(locked().items()) if have.get(n) != v
    ]


if __name__ == "__main__":
    if "--installed" in sys.argv:
        off = installed_mismatch()
        if off:
            print(
                f"setup: the environment differs from requirements.lock: {'; '.join(off)}.", file=sys.stderr
            )
        sys.exit(1 if off else 0)
    for flag, out in (
        ("--header", lambda: MARK + json.dumps(spec())),
        ("--torch", lambda: TORCH),
        ("--environment-yml", environment_yml),
    ):
        if flag in sys.argv:
            print(out(), end="" if flag == "--environment-yml" else "\n")
            sys.exit(0)
    why = problem()
    if why:
        print(f"setup: {why}", file=sys.stderr)
        sys.exit(1)
