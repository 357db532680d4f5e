"""Installing Debian packages the tools need: with apt-get when run as root, otherwise a
clear message naming the command to run."""

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence


def missing_packages(packages: Sequence[str]) -> list[str]:
    return [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]


def apt_install(packages: Sequence[str], why: str) -> None:
    """Make sure ``packages`` are installed; exit with the command to run when that is not possible."""
    missing = missing_packages(packages) if shutil.which("dpkg") else list(packages)
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "-q", *missing]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"{why} needs the Debian packages {' '.join(missing)}; install them with:\n  sudo {' '.join(cmd)}")
    print(f"installing {' '.join(missing)} with apt-get ({why}) ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, capture_output=True, env=env).returncode != 0:  # stale package lists: update once
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
