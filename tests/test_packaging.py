"""A non-editable install (a built wheel in a fresh environment) finds the shipped models."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and installs it in a new environment

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_installed_in_a_fresh_environment_translates_with_the_shipped_model(tmp_path):
    wheels = tmp_path / "wheels"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(wheels),
        str(ROOT),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("mt-*.whl")
    environment = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(environment)], check=True, timeout=120)
    # The fresh environment borrows torch and the other dependencies from this one (a .pth
    # line adds the directory, without running the editable install's own .pth hook).
    site_packages = Path(
        subprocess.run(
            [environment / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (site_packages / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(environment / "bin" / "python"),
        "install",
        "--quiet",
        "--no-deps",
        str(wheel),
    ]
    subprocess.run(install, check=True, capture_output=True, timeout=600)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [environment / "bin" / "python", "-c", "import mt.files as c; print(c.__file__); print(c.DEFAULT_MODEL)"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert str(environment) in where[0] and str(environment) in where[1]  # the installed copy, not the source tree
    translated = subprocess.run(
        [environment / "bin" / "mt", "translate", "--beam", "1", "Ein Hund läuft über die Wiese."],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout.strip() and "dog" in translated.stdout.lower()
