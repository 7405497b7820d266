"""The linter and the type checker, as tests: `make test` and CI fail on any finding.

ruff reads ruff.toml, mypy setup.cfg's [mypy] section (ROS-free core/ only). Both run from this
interpreter, so the versions are requirements/dev.txt's.
"""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_ruff_finds_nothing():
    result = run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, f"ruff check:\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing_in_core():
    result = run("mypy")
    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"
