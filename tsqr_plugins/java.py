"""Finding a JVM for pyserini, and saying exactly what to install when there is none."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import MissingDependencyError

INSTALL_HINT = (
    "pyserini 0.25 needs a Java 17+ JDK: on Debian/Ubuntu `apt-get install openjdk-17-jdk-headless`, "
    "or set JAVA_HOME to an installed JDK (pyserini >= 1.0 needs Java 21)"
)


def java_home() -> Path | None:
    """$JAVA_HOME when set, else the JDK that the `java` on PATH belongs to."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    if java is None:
        return None
    return Path(java).resolve().parent.parent


def java_version(home: Path) -> int | None:
    try:
        result = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in result.stderr.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and "." in token or token.isdigit():
            return int(head)
    return None


def ensure_java_home(minimum: int = 17) -> Path:
    """Set JAVA_HOME for pyjnius (before the JVM starts), or raise naming what to install."""
    home = java_home()
    if home is None or not (home / "bin" / "java").exists():
        raise MissingDependencyError(f"no Java found (JAVA_HOME unset and no `java` on PATH). {INSTALL_HINT}")
    version = java_version(home)
    if version is not None and version < minimum:
        raise MissingDependencyError(f"Java {version} at {home} is too old. {INSTALL_HINT}")
    os.environ["JAVA_HOME"] = str(home)
    return home
