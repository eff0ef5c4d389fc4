"""The software stack: the lock file, pyproject's supported ranges, environment.yml, and what is installed.

- ``read_lock(path)``: {name: version} from ``requirements.lock`` (``name==version`` lines).
- ``stack_problems(root)``: why pyproject.toml, requirements.lock, requirements-nodeps.txt and environment.yml disagree
  (a dependency missing from the lock, a locked version outside pyproject's range, a pin of
  requirements.in the lock does not hold, an environment.yml that does not install the lock).
- ``installed_versions(names)``: {name: version or None} of this interpreter.
- ``installed_problems(lock)``: every locked package that is missing or at another version here.
- ``python -m specnb.stack --against requirements.lock``: the installed version of every direct
  dependency beside its locked one (what ``make test-latest`` prints before its tests);
  ``--check``: exit 1 unless this interpreter holds exactly the locked versions (``make`` runs it
  after installing, in place of ``pip check``: requirements-nodeps.txt's wheels lack their own
  dependencies on purpose).

Versions compare by release (PEP 440), ignoring local labels: torch 2.13.0+cpu is torch 2.13.0.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = ["read_lock", "direct_requirements", "stack_problems", "installed_versions", "installed_problems", "main"]


def read_lock(path: str | Path) -> dict[str, str]:
    """{canonical name: version} of every ``name==version`` line of a pip requirements lock."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        spec = [s for s in req.specifier if s.operator == "=="]
        if len(spec) != 1:
            raise ValueError(f"{path}: {line!r} is not pinned with ==; regenerate the lock with `make lock`")
        pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def direct_requirements(pyproject: str | Path) -> list[Requirement]:
    """pyproject.toml's dependencies and its dev extra, as parsed requirements."""
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project.get("optional-dependencies", {}).get("dev", [])]


def _release(version: str) -> Version:
    return Version(Version(version).public)


def stack_problems(root: str | Path) -> list[str]:
    """Every disagreement between pyproject.toml, requirements.in, requirements.lock and environment.yml
    under ``root`` (empty when they agree)."""
    root = Path(root)
    lock = read_lock(root / "requirements.lock")
    problems = []
    for req in direct_requirements(root / "pyproject.toml"):
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{req.name} is a dependency in pyproject.toml but not in requirements.lock")
        elif not req.specifier.contains(_release(lock[name]), prereleases=True):
            problems.append(f"requirements.lock pins {req.name}=={lock[name]}, outside pyproject.toml's {req.specifier}")
    for line in (root / "requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            got = lock.get(canonicalize_name(req.name))
            if got is None or not req.specifier.contains(_release(got), prereleases=True):
                problems.append(f"requirements.in asks {line} but requirements.lock has {got}; run `make lock`")
    nodeps = root / "requirements-nodeps.txt"
    if nodeps.exists():
        for name in set(read_lock(nodeps)) & set(lock):  # read_lock: every line pinned with ==
            problems.append(f"{name} is in both requirements.lock and requirements-nodeps.txt; keep it in one")
    env = yaml.safe_load((root / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next((d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d), [])
    extra = [d for d in conda if d.split("=")[0] not in ("python", "pip")]
    if extra:
        problems.append(f"environment.yml installs {extra} from conda: it should take every package from the lock (pip: -r requirements.lock)")
    if "-r requirements.lock" not in pip or "-e ." not in pip:
        problems.append("environment.yml's pip section must hold '-r requirements.lock' and '-e .'")
    if "python=3.11" not in conda:
        problems.append("environment.yml must ask for python=3.11, the interpreter the lock is compiled for")
    return problems


def installed_versions(names) -> dict[str, str | None]:
    """{name: installed version, or None} in this interpreter."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def installed_problems(lock: str | Path) -> list[str]:
    """Locked packages that are missing here or installed at another release (local labels ignored)."""
    pins = read_lock(lock)
    problems = []
    for name, version in installed_versions(sorted(pins)).items():
        if version is None:
            problems.append(f"{name} is locked at {pins[name]} but not installed")
        elif _release(version) != _release(pins[name]):
            problems.append(f"{name} is locked at {pins[name]} but {version} is installed")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specnb.stack", description="installed vs locked versions of specnb's dependencies")
    parser.add_argument("--against", nargs="+", default=["requirements.lock"], help="the lock file(s) to compare with")
    parser.add_argument("--pyproject", default="pyproject.toml")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the installed versions are the locked ones")
    args = parser.parse_args(argv)
    if args.check:
        problems = [p for path in args.against for p in installed_problems(path)]
        for line in problems:
            print(f"error: {line}; run `make clean && make test` to rebuild .venv from the lock", file=sys.stderr)
        count = sum(len(read_lock(path)) for path in args.against)
        print(f"{count} locked packages: {'all installed as locked' if not problems else f'{len(problems)} differ'}")
        return 1 if problems else 0
    lock = {name: v for path in args.against for name, v in read_lock(path).items()}
    names = [canonicalize_name(r.name) for r in direct_requirements(args.pyproject)]
    installed = installed_versions(names)
    print(f"{'package':<16} {'locked':<14} {'installed':<14}")
    for name in names:
        locked, now = lock.get(name, "-"), installed[name] or "missing"
        mark = "" if now == "missing" or locked == "-" or _release(now) == _release(locked) else "  <- differs"
        print(f"{name:<16} {locked:<14} {now:<14}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
