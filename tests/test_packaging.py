"""Installing the package is quiet and ships every data file: setup.py is built the way pip
builds it (no network: the venv's setuptools, no index) from a copy of the sources."""

import os
import shutil
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data_files() -> set[str]:
    """Non-Python files of the package source tree, as paths inside a wheel."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(os.path.join(REPO, "easylm_imitate")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out |= {os.path.relpath(os.path.join(dirpath, f), REPO) for f in filenames if not f.endswith((".py", ".pyc"))}
    return out


def test_wheel_builds_without_setuptools_warnings_and_ships_the_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), src)
    shutil.copytree(os.path.join(REPO, "easylm_imitate"), src / "easylm_imitate",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-v", "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    noisy = [line for line in log.splitlines() if "Warning" in line or line.strip() == "!!"]
    assert not noisy, "\n".join(noisy[:20])
    (wheel,) = (tmp_path / "wheel").glob("easylm_imitate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert _data_files() <= names, sorted(_data_files() - names)
    assert "easylm_imitate/assets/tiny_tokenizer/tokenizer.json" in names
