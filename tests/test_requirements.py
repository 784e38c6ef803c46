"""Each function's requirements.in lists exactly the distributions its code imports, and each lock is current.

A function ships its own folder and shared/, so its imports are those of
functions/<name>/*.py and of the shared modules they reach. Each imported
module is traced to the installed distribution whose files hold it (not by
top-level name: google-cloud-firestore and google-api-core share ``google``).

A lock (a function's requirements.txt, requirements-dev.txt) is current when
it pins, with hashes, exactly the closure of its .in on the functions' runtime:
the .in's pins, then what each locked distribution requires there, extras and
markers included, read from the metadata of the distribution installed in .venv
(which installs the development lock, so that metadata is the locked
version's). This needs no index: regenerating the locks and comparing would
fail on the day PyPI gains a file for a locked version, with nothing changed here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(path.name for path in (ROOT / "functions").iterdir() if (path / "main.py").is_file())
DEV = ROOT / "requirements-dev.in"
LOCKED = [DEV] + [ROOT / "functions" / name / "requirements.in" for name in FUNCTIONS]
STALE = "run scripts/lock.sh"

# Distributions a function needs without importing them, with the reason.
NOT_IMPORTED = {
    "track": {
        "ua-parser-rs": "ua-parser's native engine, which ua_parser.regex loads",
        "ua-parser-builtins": "uap-core's rules, which ua_parser.load_builtins loads",
        "uvloop": "the server's event loop",
        "httptools": "the server's HTTP parser",
    },
    "admin": {
        "tzdata": "the IANA zones zoneinfo reads for the stats' tz, on machines without them",
    },
}


def runtime_markers() -> dict[str, str]:
    """The environment the locks are resolved for (scripts/lock.sh): venv.sh's Python on x86_64 Linux."""
    version = re.search(r"^RUNTIME_VERSION=(\S+)$", (ROOT / "scripts" / "venv.sh").read_text(), re.M)
    assert version, "scripts/venv.sh no longer sets RUNTIME_VERSION"
    return {"python_version": version[1], "python_full_version": f"{version[1]}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def pins(path: Path) -> dict[NormalizedName, Requirement]:
    """A .in file's requirements and those of the files it includes (``-r``); each must be an exact pin."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found |= pins(path.parent / line.removeprefix("-r ").strip())
        elif line:
            requirement = Requirement(line)
            [specifier] = requirement.specifier or [None]
            assert specifier is not None and specifier.operator == "==", (
                f"{path.relative_to(ROOT)}: {line!r} is not pinned as name==version")
            found[canonicalize_name(requirement.name)] = requirement
    return found


class Locked(NamedTuple):
    version: str
    hashes: frozenset[str]


def lock_of(source: Path) -> Path:
    return source.with_suffix(".txt")


def locked(source: Path) -> dict[NormalizedName, Locked]:
    """The lock of a .in file: name -> version and hashes; every entry is name==version with its hashes."""
    path = lock_of(source)
    entries = {}
    text = re.sub(r"\\\n", " ", path.read_text())  # an entry continues over lines ending in a backslash
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        hashes = frozenset(option.removeprefix("--hash=") for option in options if option.startswith("--hash="))
        assert version and hashes and len(hashes) == len(options), (
            f"{path.relative_to(ROOT)}: {line!r} is not name==version with hashes; {STALE}")
        entries[canonicalize_name(name)] = Locked(version, hashes)
    return entries


def imported_modules(path: Path) -> Iterator[str]:
    """Absolute imports, as the most specific module each could name (``from a import b`` may import a.b)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "__future__":
                continue
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def third_party_imports(function: str) -> set[str]:
    """Modules outside the standard library imported by the function and the shared modules it reaches."""
    local = {p.stem for p in (ROOT / "functions" / function).glob("*.py")}
    files = list((ROOT / "functions" / function).glob("*.py"))
    seen: set[Path] = set()
    found: set[str] = set()
    while files:
        path = files.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top == "shared":
                parts = module.split(".")  # shared.x, or shared.x.name
                if len(parts) > 1 and (ROOT / "shared" / f"{parts[1]}.py").is_file():
                    files.append(ROOT / "shared" / f"{parts[1]}.py")
            elif top not in local and top not in sys.stdlib_module_names:
                found.add(module)
    return found


@cache
def owners() -> dict[str, NormalizedName]:
    """Every installed file, as its RECORD names it -> the distribution that installed it."""
    return {
        str(Path(str(dist.locate_file(""))) / file): canonicalize_name(dist.metadata["Name"])
        for dist in importlib.metadata.distributions()
        for file in dist.files or ()
    }


def distribution_of(module: str) -> NormalizedName:
    """The distribution that installed ``module`` (or, for ``a.b`` where b is a name, module ``a``)."""
    candidates = [module, module.rsplit(".", 1)[0]] if "." in module else [module]
    for name in candidates:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            continue
        if spec is None or spec.origin is None or spec.origin in ("built-in", "frozen"):
            continue
        owner = owners().get(spec.origin)
        if owner is not None:
            return owner
    raise AssertionError(f"no installed distribution provides {module!r}")


def walk(source: Path, lock: dict[NormalizedName, Locked]) -> tuple[list[str], set[NormalizedName]]:
    """From the .in's pins through what each locked distribution requires on the runtime.

    The needs the lock does not meet, and the distributions reached.
    """
    environment = runtime_markers()
    unmet: list[str] = []
    reached: set[NormalizedName] = set()
    visited: set[tuple[NormalizedName, frozenset[str]]] = set()
    to_visit = [(str(source.relative_to(ROOT)), requirement) for requirement in pins(source).values()]
    while to_visit:
        needed_by, requirement = to_visit.pop()
        name = canonicalize_name(requirement.name)
        entry = lock.get(name)
        if entry is None or not requirement.specifier.contains(entry.version, prereleases=True):
            unmet.append(f"{needed_by} needs {requirement}, locked: {entry.version if entry else 'none'}")
            continue
        reached.add(name)
        extras = frozenset(requirement.extras)
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        distribution = importlib.metadata.distribution(name)
        assert distribution.version == entry.version, f".venv has {name} {distribution.version}, not the locked one"
        for line in distribution.requires or ():
            dependency = Requirement(line)
            if dependency.marker is None or any(
                    dependency.marker.evaluate({**environment, "extra": extra}) for extra in extras | {""}):
                to_visit.append((f"{name} {entry.version}", dependency))
    return unmet, reached


@pytest.mark.parametrize("function", FUNCTIONS)
def test_requirements_list_what_the_function_imports(function: str) -> None:
    pinned = pins(ROOT / "functions" / function / "requirements.in")
    imported = {distribution_of(module) for module in third_party_imports(function)}
    allowed_extra = set(NOT_IMPORTED.get(function, {}))
    assert imported - set(pinned) == set(), f"functions/{function} imports these without pinning them"
    assert set(pinned) - imported - allowed_extra == set(), f"functions/{function} pins these but never imports them"


def test_the_environment_is_the_development_lock() -> None:
    """The suite runs against the locked versions, so the closure below reads their metadata."""
    for name, entry in locked(DEV).items():
        assert importlib.metadata.version(name) == entry.version, f".venv has another {name} than {DEV.name}'s"


@pytest.mark.parametrize("source", LOCKED, ids=lambda path: str(path.relative_to(ROOT)))
def test_each_lock_pins_exactly_the_closure_of_its_requirements(source: Path) -> None:
    lock = locked(source)
    where = lock_of(source).relative_to(ROOT)
    unmet, reached = walk(source, lock)
    assert unmet == [], f"{where} is stale; {STALE}"
    assert set(lock) - reached == set(), (
        f"{where} locks these, which {source.relative_to(ROOT)} does not need; {STALE}")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_deploys_the_versions_and_files_the_tests_run_against(function: str) -> None:
    deployed = locked(ROOT / "functions" / function / "requirements.in")
    development = locked(DEV)
    assert {name: development.get(name) for name in deployed} == deployed, (
        f"functions/{function}/requirements.txt differs from requirements-dev.txt; {STALE}")


def test_the_development_requirements_include_every_function() -> None:
    included = re.findall(r"^-r (functions/\w+)/requirements\.in$", DEV.read_text(), re.M)
    assert sorted(included) == [f"functions/{name}" for name in FUNCTIONS]
