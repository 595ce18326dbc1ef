"""`pip install` and `pipx install` of bulkdl's wheel give a working `bulkdl` on a fresh machine: the wheel is
built from this tree, installed into a brand-new venv (its dependencies from the package index, as a user's
would be), and run from outside the source tree, against the test server."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bulkdl

from .conftest import REPO, cli_env, write_manifest
from .httpserver import FaultServer, content


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without the PYTHONPATH that would let the source tree stand in for the wheel."""
    env = cli_env(**extra)
    env.pop("PYTHONPATH")
    return env


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the tree, so that the build's egg-info and build/ never land in the checkout.
    tree = out / "src"
    _copy_tree(tree)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, tree, cwd=out)
    (built,) = out.glob("bulkdl-*.whl")
    return built


def _copy_tree(tree: Path) -> None:
    """The files git knows, and those not yet committed but not ignored: what a clean clone would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_bytes(source.read_bytes())


def test_the_wheel_holds_every_package_of_the_tree(wheel: Path) -> None:
    """pyproject's packages list is written by hand: a new subpackage it misses would be absent from the wheel
    and fail only on a user's machine, on its first import."""
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "bulkdl").rglob("*.py")}
    with zipfile.ZipFile(wheel) as zipped:
        names = set(zipped.namelist())
    for package in sorted(packages):
        modules = [p.relative_to(REPO).as_posix() for p in (REPO / package).glob("*.py")]
        missing = [m for m in modules if m not in names]
        assert not missing, f"not in the wheel: {missing}; add {package.replace('/', '.')} to pyproject's packages"


def test_pip_install_of_the_wheel_into_a_new_venv_runs(wheel: Path, builtin: FaultServer, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin/python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
    assert _run(venv / "bin/bulkdl", "--version", cwd=tmp_path).strip() == f"bulkdl {bulkdl.__version__}"
    # pyproject reads the version from bulkdl/__init__.py: the distribution's metadata says the same.
    said = _run(venv / "bin/python", "-c", "import importlib.metadata as m; print(m.version('bulkdl'))", cwd=tmp_path)
    assert said.strip() == bulkdl.__version__
    where = _run(venv / "bin/python", "-c", "import bulkdl; print(bulkdl.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv), "the source tree, not the installed wheel, was imported"
    files = {name: content(name, 300_000) for name in ("one.bin", "two.bin")}
    manifest = write_manifest(tmp_path, [builtin.add(name, data) for name, data in files.items()])
    out = _run(venv / "bin/bulkdl", "run", manifest, cwd=tmp_path)
    assert out.splitlines()[-1].startswith("OK: 2 files (2 new)"), out
    for name, data in files.items():
        assert (tmp_path / "mirror" / name).read_bytes() == data


def test_pipx_install_of_the_wheel_runs(wheel: Path, tmp_path: Path) -> None:
    env = _env(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"), PIPX_MAN_DIR=str(tmp_path / "man"))
    _run(sys.executable, "-m", "pipx", "install", "--quiet", wheel, cwd=tmp_path, env=env)
    assert _run(tmp_path / "bin/bulkdl", "--version", cwd=tmp_path, env=env).strip() == f"bulkdl {bulkdl.__version__}"
    assert os.path.realpath(tmp_path / "bin/bulkdl").startswith(str(tmp_path / "pipx"))


def test_the_command_line_starts_without_the_download_code() -> None:
    """The parent's imports come before a run's first request, while the forkserver imports the download code
    on the other core (parent/processes.py): urllib3, http.client and the distribution's metadata cost it some
    100 ms when the parent imported them too."""
    heavy = ("urllib3", "http.client", "importlib.metadata", "bulkdl.worker.serve", "bulkdl.worker.fetch")
    probe = f"import sys, bulkdl.cli, bulkdl.commands.run; print([m for m in {heavy!r} if m in sys.modules])"
    assert _run(sys.executable, "-c", probe, cwd=REPO, env=cli_env()).strip() == "[]"
