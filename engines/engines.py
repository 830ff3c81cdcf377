"""Real Elasticsearch and OpenSearch nodes on 127.0.0.1, from Maven Central, without Docker.

    python3 engines/engines.py start [--only NAME ...]   # fetch, install, start, wait for green
    python3 engines/engines.py stop                      # stop them by PID
    python3 engines/engines.py status

    TSQR_ENGINES_PORT_OFFSET=1000 python3 engines/engines.py start --only opensearch3   # 10213

`make engines` / `make engines-stop` call this. Artifacts come from Maven Central through Maven
(engines/pom.xml, cached in ~/.m2); unpacked nodes, their data and logs live under .engines/
(or /var/tmp/tsqr-engines when the engines' user cannot reach the checkout). `.engines/env` gets
one `NAME=value` line per node (TSQR_ES_URL, TSQR_OPENSEARCH_URL, TSQR_OPENSEARCH3_URL and their
versions) for the tests and eval backends to read. `TSQR_ENGINES_PORT_OFFSET` moves every port (HTTP
9211-9213, transport 100 above) by that much, for a second set of nodes beside the usual ones (say,
from another checkout, whose .engines/ is its own). Standard library only (and tsqr_plugins.java from
this checkout): it runs before any venv.

Why each piece is here:
- The integ-test zips are the only engine distributions on Maven Central. They bundle no JDK, so
  each node runs on a JDK found on this machine (OpenSearch 2.19 on Java 17; Elasticsearch 9 and
  OpenSearch 3 need Java 21+).
- OpenSearch 2.19's integ-test zip has no modules but transport-netty4: `analysis-common` (where
  `stemmer`, `porter_stem` live), `ingest-common` (`set`, `rename`) and `lang-mustache` (the
  ingest pipeline's `{{{id}}}`) come from their published jars, laid out as the full distribution
  lays them out. OpenSearch 3's integ-test zip has them all.
- Elasticsearch's integ-test zip has no `analysis-common` either, and Elasticsearch publishes no
  module jars; engines/es-analysis is a stable-API plugin with the two filters tsqr's index
  template needs, built from Lucene's own classes.
- Both engines refuse to run as root: as root, nodes run as a system user `tsqr-engine`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ENGINES_SRC = Path(__file__).resolve().parent
REPO = ENGINES_SRC.parent
sys.path.insert(0, str(REPO))  # tsqr_plugins.java finds JDKs (standard library only, like this script)
from tsqr_plugins.java import installed_jdks, java_home, java_version  # noqa: E402
STATE_DIR = REPO / ".engines"
ENV_FILE = STATE_DIR / "env"
FALLBACK_RUN_ROOT_BASE = "/var/tmp/tsqr-engines"
ENGINE_USER = "tsqr-engine"
M2 = Path(os.environ.get("TSQR_M2_REPO", Path.home() / ".m2" / "repository"))
HEAP = os.environ.get("TSQR_ENGINE_HEAP", "512m")


def port_offset() -> int:
    """TSQR_ENGINES_PORT_OFFSET: how far every port moves (0: 9211-9213)."""
    text = os.environ.get("TSQR_ENGINES_PORT_OFFSET", "0").strip() or "0"
    try:
        offset = int(text)
    except ValueError:
        offset = -1
    if not 0 <= offset <= 50_000:
        sys.exit(f"engines: TSQR_ENGINES_PORT_OFFSET must be a whole number from 0 to 50000, got {text!r}")
    return offset


PORT_OFFSET = port_offset()
# nodes on other ports are other nodes: their files never mix with the usual ones'
FALLBACK_RUN_ROOT = Path(FALLBACK_RUN_ROOT_BASE + (f"-{PORT_OFFSET}" if PORT_OFFSET else ""))
START_TIMEOUT_S = 240


@dataclass(frozen=True)
class Node:
    name: str            # what --only takes
    product: str         # opensearch | elasticsearch
    version: str
    http_port: int
    min_java: int
    url_variable: str
    plugins: tuple[str, ...] = ()            # Maven artifact ids under org.opensearch.plugin, in install order
    modules: tuple["Module", ...] = ()       # module jars the integ-test zip lacks
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def home_name(self) -> str:
        return f"{self.product}-{self.version}"

    @property
    def transport_port(self) -> int:
        return self.http_port + 100


@dataclass(frozen=True)
class Module:
    """An OpenSearch module the integ-test zip lacks, laid out from its published jars as the full
    distribution lays it out (modules/<name>/: the jars, a descriptor, the module's security policy).
    Read in OpenSearch 2.19's modules/<name>/build.gradle and src/main/plugin-metadata."""
    name: str                      # the folder under modules/
    artifact: str                  # org.opensearch.plugin:<artifact>:<engine version>
    classname: str
    libraries: tuple[str, ...] = ()  # group:artifact:version of the jars the module's build.gradle adds
    policy: str = ""               # plugin-security.policy


OPENSEARCH2 = "2.19.6"

OPENSEARCH2_MODULES = (
    # `stemmer` and `porter_stem`, which tsqr's index template uses
    Module("analysis-common", "analysis-common", "org.opensearch.analysis.common.CommonAnalysisPlugin"),
    # `set` and `rename`, which tsqr's ingest pipeline uses; grok and dissect are its `api` libraries
    # (grok's pom names joni and jcodings)
    Module("ingest-common", "ingest-common", "org.opensearch.ingest.common.IngestCommonPlugin",
           libraries=(f"org.opensearch:opensearch-grok:{OPENSEARCH2}", f"org.opensearch:opensearch-dissect:{OPENSEARCH2}",
                      "org.jruby.joni:joni:2.2.1", "org.jruby.jcodings:jcodings:1.0.61")),
    # `{{{id}}}` in the ingest pipeline's `set` is a mustache template; the module is published as
    # its client jar (hasClientJar), which holds MustachePlugin
    Module("lang-mustache", "lang-mustache-client", "org.opensearch.script.mustache.MustachePlugin",
           libraries=("com.github.spullara.mustache.java:compiler:0.9.14",),
           policy='grant {\n  permission java.lang.RuntimePermission "accessDeclaredMembers";\n};\n'),
)
OPENSEARCH3 = "3.6.0"
ELASTICSEARCH = "9.2.0"

NODES = (
    Node("elasticsearch", "elasticsearch", ELASTICSEARCH, 9211 + PORT_OFFSET, 21, "TSQR_ES_URL"),
    Node("opensearch", "opensearch", OPENSEARCH2, 9212 + PORT_OFFSET, 17, "TSQR_OPENSEARCH_URL",
         plugins=("opensearch-job-scheduler", "opensearch-ml-plugin"), modules=OPENSEARCH2_MODULES),
    # neural-search (the hybrid query and the score-ranker processor behind tsqr's rrf pipeline)
    # extends k-NN, so k-NN comes first; Maven Central serves both for 3.6.0.0 but neither for
    # 2.19.6.0 (neural-search only 2.19.1.0), and a plugin must match its node's version exactly
    Node("opensearch3", "opensearch", OPENSEARCH3, 9213 + PORT_OFFSET, 21, "TSQR_OPENSEARCH3_URL",
         plugins=("opensearch-job-scheduler", "opensearch-ml-plugin", "opensearch-knn", "neural-search")),
)

class EngineError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"engines: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- Java

def find_java(minimum: int, maximum: int | None = None) -> Path:
    """JAVA_HOME / PATH first, then the installed JDKs tsqr_plugins.java knows of."""
    seen = []
    for home in [java_home(), *installed_jdks()]:
        major = java_version(home) if home is not None else None
        if major is None:
            continue
        seen.append(f"{home} (Java {major})")
        if major >= minimum and (maximum is None or major <= maximum):
            return home
    wanted = f"Java {minimum}+" if maximum is None else f"Java {minimum}-{maximum}"
    raise EngineError(f"no {wanted} found (looked at: {', '.join(seen) or 'nothing'}); install one "
                      f"(e.g. a Temurin JDK) or point TSQR_JAVA_HOME at it")


def java_for(node: Node) -> Path:
    # OpenSearch 2.19 supports Java 11-23 (it passes options later JDKs removed); prefer 17.
    if node.product == "opensearch" and node.version.startswith("2."):
        return find_java(17, 23)
    return find_java(node.min_java)


# ---------------------------------------------------------------- artifacts

def maven_artifacts(nodes: list[Node]) -> None:
    """Fetch every artifact the nodes need into ~/.m2 with Maven (no-op when cached)."""
    missing = [coords for node in nodes for coords in artifact_coordinates(node) if not m2_path(coords).is_file()]
    if not missing:
        return
    if shutil.which("mvn") is None:
        raise EngineError("Maven (mvn) is not installed: apt-get install maven")
    for coords in missing:
        log(f"fetching {coords} from Maven Central")
        # engines/pom.xml pins the dependency plugin; dependency:get resolves one artifact into the
        # local repository, which must be the one m2_path reads (TSQR_M2_REPO)
        result = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(ENGINES_SRC / "pom.xml"), "dependency:get",
             f"-Dartifact={coords}", "-Dtransitive=false", f"-Dmaven.repo.local={M2}"],
            capture_output=True, text=True)
        if result.returncode != 0 or not m2_path(coords).is_file():
            tail = "\n".join(result.stdout.splitlines()[-5:])
            raise EngineError(f"Maven could not fetch {coords}:\n{tail}")


def artifact_coordinates(node: Node) -> list[str]:
    coords = [f"org.{node.product}.distribution.integ-test-zip:{node.product}:{node.version}:zip"]
    coords += [f"org.opensearch.plugin:{plugin}:{node.version}.0:zip" for plugin in node.plugins]
    for module in node.modules:
        coords += [module_coordinates(node, module), *(f"{library}:jar" for library in module.libraries)]
    return coords


def module_coordinates(node: Node, module: Module) -> str:
    return f"org.opensearch.plugin:{module.artifact}:{node.version}:jar"


def m2_path(coords: str) -> Path:
    group, artifact, version, packaging = coords.split(":")
    return M2.joinpath(*group.split("."), artifact, version, f"{artifact}-{version}.{packaging}")


# ---------------------------------------------------------------- install

def run_root() -> Path:
    """Where nodes live: .engines/run, unless the engines' user cannot reach it."""
    preferred = STATE_DIR / "run"
    preferred.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return preferred
    ensure_engine_user()
    reachable = subprocess.run(["runuser", "-u", ENGINE_USER, "--", "test", "-x", str(preferred)]).returncode == 0
    if reachable:
        return preferred
    FALLBACK_RUN_ROOT.mkdir(parents=True, exist_ok=True)
    return FALLBACK_RUN_ROOT


def ensure_engine_user() -> None:
    try:
        pwd.getpwnam(ENGINE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ENGINE_USER],
                       check=True)


def install(node: Node, root: Path) -> Path:
    home = root / node.home_name
    marker = home / ".tsqr-installed"
    # what the node is made of: a changed list (a module added here) installs it afresh
    recipe = artifact_coordinates(node)
    if marker.is_file() and json.loads(marker.read_text()).get("artifacts") == recipe:
        return home
    if home.exists():
        shutil.rmtree(home)
    log(f"installing {node.home_name} under {root}")
    with zipfile.ZipFile(m2_path(artifact_coordinates(node)[0])) as archive:
        archive.extractall(root)
    for path in (home / "bin").iterdir():
        path.chmod(0o755)
    java_home = java_for(node)
    for module in node.modules:
        add_opensearch_module(node, home, module)
    for plugin in node.plugins:
        plugin_zip = m2_path(f"org.opensearch.plugin:{plugin}:{node.version}.0:zip")
        run_tool(node, home, java_home, "opensearch-plugin", ["install", "--batch", plugin_zip.as_uri()])
    if node.product == "elasticsearch":
        run_tool(node, home, java_home, "elasticsearch-plugin",
                 ["install", "--batch", build_es_analysis_plugin(node).as_uri()])
    marker.write_text(json.dumps({"version": node.version, "java_home": str(java_home), "artifacts": recipe}))
    return home


def add_opensearch_module(node: Node, home: Path, module: Module) -> None:
    """Lay a module's published jars out as the full distribution does: modules/<name>/ + descriptor."""
    target = home / "modules" / module.name
    target.mkdir(parents=True, exist_ok=True)
    for coords in (module_coordinates(node, module), *(f"{library}:jar" for library in module.libraries)):
        shutil.copy2(m2_path(coords), target)
    if module.policy:
        (target / "plugin-security.policy").write_text(module.policy)
    descriptor = {
        "description": f"{module.name} module (published jars from Maven Central)",
        "version": node.version,
        "name": module.name,
        "classname": module.classname,
        "java.version": "11",
        "opensearch.version": node.version,
        # lang-painless is absent: analysis-common and ingest-common extend it only with painless
        # allow-lists (loaded by painless, never by the module itself)
        "extended.plugins": "",
        "has.native.controller": "false",
    }
    (target / "plugin-descriptor.properties").write_text("".join(f"{k}={v}\n" for k, v in descriptor.items()))


def build_es_analysis_plugin(node: Node) -> Path:
    source = ENGINES_SRC / "es-analysis"
    out = STATE_DIR / "build" / f"tsqr-es-analysis-{node.version}.zip"
    if out.is_file():
        return out
    java_home = find_java(21)
    log("building engines/es-analysis (Elasticsearch stable plugin)")
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(source / "pom.xml"), "package", f"-Delasticsearch.version={node.version}"],
        env={**os.environ, "JAVA_HOME": str(java_home)}, capture_output=True, text=True)
    jar = source / "target" / "tsqr-es-analysis-1.0.jar"
    if result.returncode != 0 or not jar.is_file():
        raise EngineError("building engines/es-analysis failed:\n" + "\n".join(result.stdout.splitlines()[-20:]))
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = (f"description=porter_stem and English stemmer filters for the integ-test distribution\n"
                  f"version=1.0\nname=tsqr-es-analysis\njava.version=21\nelasticsearch.version={node.version}\n")
    with zipfile.ZipFile(out, "w") as archive:
        archive.write(jar, jar.name)
        archive.write(source / "src" / "main" / "plugin" / "named_components.json", "named_components.json")
        archive.writestr("stable-plugin-descriptor.properties", descriptor)
    return out


def run_tool(node: Node, home: Path, java_home: Path, tool: str, args: list[str]) -> None:
    result = subprocess.run([str(home / "bin" / tool), *args], env=node_env(node, java_home),
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise EngineError(f"{tool} {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def node_env(node: Node, java_home: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ES_", "OPENSEARCH_"))}
    env["JAVA_HOME"] = str(java_home)
    if node.product == "elasticsearch":
        env["ES_JAVA_HOME"] = str(java_home)
        env["ES_JAVA_OPTS"] = f"-Xms{HEAP} -Xmx{HEAP}"
    else:
        env["OPENSEARCH_JAVA_HOME"] = str(java_home)
        env["OPENSEARCH_JAVA_OPTS"] = f"-Xms{HEAP} -Xmx{HEAP}"
    return env


# ---------------------------------------------------------------- run

def url(node: Node) -> str:
    return f"http://127.0.0.1:{node.http_port}"


def health(node: Node, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url(node)}/_cluster/health", timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def pid_file(node: Node) -> Path:
    return STATE_DIR / f"{node.name}.pid"


def running_pid(node: Node) -> int | None:
    try:
        pid = int(pid_file(node).read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start(node: Node, root: Path) -> subprocess.Popen | None:
    if running_pid(node) and health(node):
        log(f"{node.name} {node.version} already running on {url(node)}")
        return None
    for port in (node.http_port, node.transport_port):
        if port_taken(port):
            raise EngineError(f"port {port} on 127.0.0.1 is taken (not by a node of ours): stop what uses it")
    home = install(node, root)
    java_home = Path(json.loads((home / ".tsqr-installed").read_text())["java_home"])
    data, logs = root / f"{node.name}-data", root / f"{node.name}-logs"
    if data.exists():
        shutil.rmtree(data)  # a fresh cluster each start: tests expect none of yesterday's indices
    for path in (data, logs):
        path.mkdir(parents=True, exist_ok=True)
    settings = {
        "http.host": "127.0.0.1", "transport.host": "127.0.0.1",
        "http.port": node.http_port, "transport.port": node.transport_port,
        "discovery.type": "single-node", "path.data": data, "path.logs": logs,
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    if node.product == "elasticsearch":
        settings["xpack.security.enabled"] = "false"
    else:
        # ml-commons runs models on dedicated ML nodes unless told otherwise; a one-node cluster has none
        settings["plugins.ml_commons.only_run_on_ml_node"] = "false"
    command = [str(home / "bin" / node.product), *(f"-E{key}={value}" for key, value in settings.items())]
    if os.geteuid() == 0:
        for path in (home, data, logs):
            subprocess.run(["chown", "-R", f"{ENGINE_USER}:", str(path)], check=True)
        command = ["runuser", "-u", ENGINE_USER, "--", *command]
    console = open(STATE_DIR / f"{node.name}.console.log", "wb")
    process = subprocess.Popen(command, env=node_env(node, java_home), stdout=console, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, cwd=home)
    pid_file(node).write_text(str(process.pid))
    log(f"starting {node.name} {node.version} on {url(node)} (Java {java_version(java_home)}, heap {HEAP})")
    return process


def wait_green(node: Node, process: subprocess.Popen | None, started: float) -> float:
    while time.monotonic() - started < START_TIMEOUT_S:
        if process is not None and process.poll() is not None:
            raise EngineError(f"{node.name} exited with {process.returncode} while starting; see "
                              f"{STATE_DIR / (node.name + '.console.log')}:\n{console_tail(node)}")
        state = health(node)
        if state and state.get("status") in ("green", "yellow"):
            return time.monotonic() - started
        time.sleep(1)
    raise EngineError(f"{node.name} was not up after {START_TIMEOUT_S} s:\n{console_tail(node)}")


def console_tail(node: Node) -> str:
    path = STATE_DIR / f"{node.name}.console.log"
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(line for line in lines if "WARNING" not in line[:10])[-3000:]


def stop(node: Node) -> None:
    pid = running_pid(node)
    if pid is None:
        pid_file(node).unlink(missing_ok=True)
        return
    # the process group: runuser and the JVM under it
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and running_pid(node):
        time.sleep(0.5)
    if running_pid(node):
        os.killpg(pid, signal.SIGKILL)
    pid_file(node).unlink(missing_ok=True)
    log(f"stopped {node.name}")


def write_env(nodes: list[Node]) -> None:
    """One entry per node started here or still running (a start with --only keeps the others)."""
    lines = []
    for node in [node for node in NODES if node in nodes or (running_pid(node) and health(node))]:
        prefix = node.url_variable.removesuffix("_URL")
        lines += [f"{node.url_variable}={url(node)}", f"{prefix}_VERSION={node.version}"]
    if not lines:
        ENV_FILE.unlink(missing_ok=True)
        return
    ENV_FILE.write_text("\n".join(lines) + "\n")


def selected(only: list[str] | None) -> list[Node]:
    if not only:
        return list(NODES)
    names = {node.name: node for node in NODES}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise EngineError(f"unknown engine(s) {unknown}; choose from {sorted(names)}")
    return [names[name] for name in only]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--only", nargs="*", help="engines to act on (default: all)")
    args = parser.parse_args(argv)
    STATE_DIR.mkdir(exist_ok=True)
    try:
        nodes = selected(args.only)
        if args.command == "stop":
            for node in nodes:
                stop(node)
            write_env([])  # the nodes still running, if --only left some
            return 0
        if args.command == "status":
            for node in nodes:
                state = health(node)
                print(f"{node.name:14} {node.version:8} {url(node):24} "
                      f"{state['status'] if state else 'down'}")
            return 0
        maven_artifacts(nodes)
        root = run_root()
        started = time.monotonic()
        try:
            processes = [(node, start(node, root)) for node in nodes]
            for node, process in processes:
                seconds = wait_green(node, process, started)
                log(f"{node.name} {node.version} up on {url(node)} after {seconds:.0f} s")
        except BaseException:
            for node in nodes:  # none left running half-started
                stop(node)
            raise
        write_env(nodes)
        log(f"wrote {ENV_FILE}")
        return 0
    except EngineError as error:
        log(f"error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
