"""Each function's requirements.txt lists exactly the distributions its code imports.

A function ships its own folder and shared/, so its imports are those of
functions/<name>/*.py and of the shared modules they reach. Each imported
module is traced to the installed distribution whose files hold it (not by
top-level name: google-cloud-firestore and google-api-core share ``google``).
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

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(path.name for path in (ROOT / "functions").iterdir() if (path / "main.py").is_file())

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
_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>\S+)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(function: str) -> dict[str, str]:
    """name -> pinned version; every line must be an exact pin."""
    pins = {}
    for line in (ROOT / "functions" / function / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQUIREMENT.match(line)
        assert match, f"functions/{function}/requirements.txt: {line!r} is not pinned as name==version"
        pins[normalize(match["name"])] = match["version"]
    return pins


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
def owners() -> dict[str, str]:
    """Every installed file, as its RECORD names it -> the distribution that installed it."""
    return {
        str(Path(str(dist.locate_file(""))) / file): normalize(dist.metadata["Name"])
        for dist in importlib.metadata.distributions()
        for file in dist.files or ()
    }


def distribution_of(module: str) -> str:
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


@pytest.mark.parametrize("function", FUNCTIONS)
def test_requirements_list_what_the_function_imports(function: str) -> None:
    pinned = requirements(function)
    imported = {distribution_of(module) for module in third_party_imports(function)}
    allowed_extra = set(NOT_IMPORTED.get(function, {}))
    assert imported - set(pinned) == set(), f"functions/{function} imports these without pinning them"
    assert set(pinned) - imported - allowed_extra == set(), f"functions/{function} pins these but never imports them"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_pins_are_what_is_installed(function: str) -> None:
    """The suite runs against exactly what deploys (requirements-dev.txt includes every function's file)."""
    for name, version in requirements(function).items():
        assert importlib.metadata.version(name) == version, f"functions/{function}: {name}"


def test_the_development_requirements_include_every_function() -> None:
    included = re.findall(r"^-r (functions/\w+)/requirements\.txt$", (ROOT / "requirements-dev.txt").read_text(), re.M)
    assert sorted(included) == [f"functions/{name}" for name in FUNCTIONS]
