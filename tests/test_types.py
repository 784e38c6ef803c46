"""mypy, strict (mypy.ini), over the deployed code: shared/ and each function.

Each function folder is an import root of its own and all have a main.py, so
mypy checks one function at a time, with shared/ as deployed beside it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(path.name for path in (ROOT / "functions").iterdir() if (path / "main.py").is_file())


@pytest.mark.parametrize("function", FUNCTIONS)
def test_mypy_strict(function: str) -> None:
    files = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "functions" / function).glob("*.py"))]
    files += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "shared").glob("*.py"))]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
