"""The local single-node Kafka broker: KRaft, broker and controller in one JVM.

``docstreams run`` needs a Kafka to talk to. When ``DOCSTREAMS_BOOTSTRAP`` names a real
cluster nothing here runs; otherwise this module fetches the Kafka jars from Maven
Central once, formats a data directory once, and keeps one broker process alive under
``<home>/broker/``::

    libs/               Kafka + log4j jars (copied by Maven, reused across runs)
    data/               log.dirs: topics and the KRaft metadata log
    logs/server.log     the broker's log (console.log catches JVM start-up errors)
    server.properties   rewritten on every start, from ``server_properties``
    broker.json         pid, ports and cluster id of the last start

The broker is detached from the CLI that starts it, so ``docstreams broker start`` can
return and later commands find it through ``broker.json``. Starting is idempotent and
keeps the bootstrap port stable across restarts whenever that port is still free.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.errors import ConfigError, DocstreamsError
from streams.settings import Settings

__all__ = [
    "KAFKA_VERSION",
    "BrokerInfo",
    "ensure_jars",
    "find_java",
    "parse_java_version",
    "resolve_bootstrap",
    "server_properties",
    "start",
    "status",
    "stop",
]

KAFKA_VERSION = "4.1.1"  # must match tools/kafka/pom.xml (a unit test checks)
LOG4J_VERSION = "2.24.3"
MIN_JAVA = 17
HOST = "127.0.0.1"

_POM = Path(__file__).resolve().parents[1] / "tools" / "kafka" / "pom.xml"
_COPY_GOAL = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
_POLL_S = 0.2  # readiness poll interval: an open port comes earlier than a usable broker
_TAIL_LINES = 20
_log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BrokerInfo:
    """A running, ready local broker. ``launched`` is False when it was already up."""

    bootstrap: str
    pid: int
    controller_port: int
    log_file: Path
    data_dir: Path
    launched: bool = False
    ready_seconds: float = 0.0


@dataclass(frozen=True)
class _Paths:
    """Where the local broker keeps its files, all under ``<home>/broker``."""

    root: Path
    libs: Path
    data: Path
    logs: Path
    server_log: Path
    console_log: Path
    config: Path
    log4j: Path
    state: Path
    lock: Path

    @classmethod
    def of(cls, settings: Settings) -> _Paths:
        root = settings.home / "broker"
        logs = root / "logs"
        return cls(root=root, libs=root / "libs", data=root / "data", logs=logs,
                   server_log=logs / "server.log", console_log=logs / "console.log",
                   config=root / "server.properties", log4j=root / "log4j2.properties",
                   state=root / "broker.json", lock=root / ".lock")


# --- configuration files (pure) ------------------------------------------------------


def server_properties(*, port: int, controller_port: int, data_dir: Path) -> str:
    """``server.properties`` for one combined broker+controller on the loopback interface."""
    return f"""\
# Written by streams.broker on every start; edits here are overwritten.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.bootstrap.servers={HOST}:{controller_port}
log.dirs={data_dir}
# Topics are created on purpose (streams.topics), never by a typo in a client.
auto.create.topics.enable=false
# One node: internal topics can only have one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions: fewer files and a faster first group join on a laptop.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
# Do not wait 3 s for more members before the first rebalance.
group.initial.rebalance.delay.ms=0
# The default reserves 128 MiB of heap for compaction; 2 MiB is plenty locally.
log.cleaner.dedupe.buffer.size=2097152
"""


def log4j2_properties(logs_dir: Path) -> str:
    """A log4j2 config writing one rolling ``server.log``, without per-request noise."""
    return f"""\
# Written by streams.broker on every start.
status = warn
name = docstreams-broker
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = {logs_dir}/server.log
appender.server.filePattern = {logs_dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 10MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 5
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
# Full config dumps (hundreds of lines each) and request/state chatter drown the tail.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


_BROKER_HEAP = ("-Xms256m", "-Xmx1g")
_TOOL_HEAP = ("-Xms64m", "-Xmx256m")


def java_argv(java: Path, paths: _Paths, main: str, *args: str,
              heap: tuple[str, str] = _BROKER_HEAP) -> list[str]:
    """The JVM command line. The classpath glob is one argv element: Java expands it."""
    return [
        str(java),
        *heap,
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={paths.logs}",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        "-cp",
        f"{paths.libs}/*",
        main,
        *args,
    ]


# --- jars and java ---------------------------------------------------------------------


def ensure_jars(settings: Settings, *, progress: Progress | None = None) -> bool:
    """Copy the Kafka jars into ``<home>/broker/libs`` unless they are there already.

    Maven does the resolving (and caches in ~/.m2). The copy lands in a scratch
    directory renamed into place at the end, so an interrupted download is never
    mistaken for a complete one. Returns True when it downloaded.
    """
    paths = _Paths.of(settings)
    if (paths.libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError(
            f"Maven (mvn) is needed once, to fetch the Kafka {KAFKA_VERSION} jars from Maven "
            "Central for the local broker: apt-get install maven (or brew install maven). "
            "To use an existing cluster instead, set DOCSTREAMS_BOOTSTRAP=host:port."
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    scratch = paths.root / "libs.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    _say(progress, f"Fetching Kafka {KAFKA_VERSION} jars with Maven (once, about 45 MB)...")
    argv = [mvn, "-q", "-B", "-f", str(_pom_file(paths)), _COPY_GOAL,
            "-DincludeScope=runtime", f"-DoutputDirectory={scratch}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise DocstreamsError("Maven did not finish fetching the Kafka jars within 15 min",
                              reason="broker_unavailable", retryable=True) from None
    if done.returncode != 0 or not (scratch / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        output = _strip_ansi(done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:]
        raise DocstreamsError(
            f"Maven could not fetch the Kafka jars (exit {done.returncode}). Check access to "
            "Maven Central (or a mirror in ~/.m2/settings.xml). Maven said:\n  "
            + "\n  ".join(output),
            reason="broker_unavailable", retryable=True,
        )
    shutil.rmtree(paths.libs, ignore_errors=True)
    scratch.rename(paths.libs)
    return True


def _pom_file(paths: _Paths) -> Path:
    """The repository's POM; an installed package without the repo writes an equivalent."""
    if _POM.is_file():
        return _POM
    pom = paths.root / "pom.xml"
    deps = [("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
            ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION)]
    body = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
                   f"<version>{v}</version></dependency>" for g, a, v in deps)
    pom.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>io.docstreams</groupId><artifactId>docstreams-local-kafka</artifactId>"
        f"<version>0</version><packaging>pom</packaging><dependencies>{body}</dependencies>"
        "</project>\n"
    )
    return pom


def parse_java_version(text: str) -> int | None:
    """The feature version from ``java -version`` output: 17, 21, 8 (for ``1.8.0_x``)."""
    found = re.search(r'version "([^"]+)"', text)
    if not found:
        return None
    raw = found.group(1)
    if raw.startswith("1."):
        raw = raw[2:]
    digits = re.match(r"\d+", raw)
    return int(digits.group()) if digits else None


def find_java(env: Mapping[str, str] | None = None, *,
              jvm_root: Path = Path("/usr/lib/jvm")) -> Path:
    """A ``java`` of version 17 or newer: JAVA_HOME first, then PATH, then ``jvm_root``."""
    env = os.environ if env is None else env
    candidates: list[Path] = []
    if env.get("JAVA_HOME"):
        candidates.append(Path(env["JAVA_HOME"]) / "bin" / "java")
    on_path = shutil.which("java", path=env.get("PATH", os.defpath))
    if on_path:
        candidates.append(Path(on_path))
    candidates += sorted(jvm_root.glob("*17*/bin/java")) + sorted(jvm_root.glob("*/bin/java"))
    seen: list[str] = []
    for java in dict.fromkeys(candidates):  # keeps order, drops duplicates
        version = _java_version(java)
        if version is not None and version >= MIN_JAVA:
            return java
        if java.exists():
            seen.append(f"{java} ({version or 'unknown version'})")
    found = f" Found only: {', '.join(seen)}." if seen else ""
    raise ConfigError(
        f"The local Kafka broker needs Java {MIN_JAVA} or newer.{found} Install OpenJDK 17: "
        "apt-get install openjdk-17-jre-headless (or set JAVA_HOME to a JDK 17+). "
        "To use an existing cluster instead, set DOCSTREAMS_BOOTSTRAP=host:port."
    )


def _java_version(java: Path) -> int | None:
    if not os.access(java, os.X_OK):
        return None
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(out.stderr + out.stdout)


# --- lifecycle -----------------------------------------------------------------------


def start(settings: Settings, *, timeout: float = 60.0,
          progress: Progress | None = None) -> BrokerInfo:
    """Start the local broker, or return the running one once it answers metadata requests.

    Either returns a ready broker or raises ``DocstreamsError`` quoting the broker log;
    a broker launched by a failed call is stopped again, never left half-started.
    """
    return _ensure_running(settings, timeout, progress)


def stop(settings: Settings, *, timeout: float = 20.0) -> bool:
    """SIGTERM the local broker, SIGKILL it after ``timeout``. False if it was not running.

    A broker whose controller is unreachable can ignore SIGTERM indefinitely, hence
    the deadline. Ports and cluster id stay in broker.json for the next start.
    """
    paths = _Paths.of(settings)
    if not paths.root.is_dir():
        return False
    with _exclusive(paths):
        state = _read_state(paths)
        pid = _running_pid(paths, state)
        if pid is not None:
            _terminate(pid, timeout)
        if state.get("pid"):
            _write_state(paths, {**state, "pid": None})
        return pid is not None


def status(settings: Settings) -> dict[str, Any]:
    """What runs where: the configured cluster, or the local broker and whether it is ready."""
    if settings.bootstrap:
        conf = settings.kafka_common(settings.bootstrap)
        return {"mode": "external", "bootstrap": settings.bootstrap, "running": None,
                "ready": _answers_metadata(_admin(conf), 5.0), "pid": None,
                "data_dir": None, "log_file": None}
    paths = _Paths.of(settings)
    state = _read_state(paths)
    pid = _running_pid(paths, state)
    bootstrap = f"{HOST}:{state['port']}" if state.get("port") else None
    ready = bool(pid and bootstrap and _answers_metadata(_local_admin(bootstrap), 3.0))
    return {"mode": "local", "bootstrap": bootstrap, "running": pid is not None, "ready": ready,
            "pid": pid, "controller_port": state.get("controller_port"),
            "data_dir": str(paths.data), "log_file": str(paths.server_log),
            "started_at": state.get("started_at") if pid else None,
            "kafka_version": KAFKA_VERSION}


def resolve_bootstrap(settings: Settings, *, start: bool = True) -> str:
    """The bootstrap servers to use: DOCSTREAMS_BOOTSTRAP if set, else the local broker."""
    if settings.bootstrap:
        return settings.bootstrap
    if start:
        return _ensure_running(settings, 60.0, None).bootstrap
    paths = _Paths.of(settings)
    state = _read_state(paths)
    if _running_pid(paths, state) is not None:
        return f"{HOST}:{state['port']}"
    raise DocstreamsError(
        f"No local Kafka broker is running under {settings.home} (DOCSTREAMS_HOME, default "
        "./.docstreams of the current folder): start it with `docstreams broker start`, run "
        "from the folder where you started it, or set DOCSTREAMS_BOOTSTRAP=host:port.",
        reason="broker_unavailable", retryable=True,
    )


def _ensure_running(settings: Settings, timeout: float, progress: Progress | None) -> BrokerInfo:
    paths = _Paths.of(settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    with _exclusive(paths):  # two CLIs starting at once must not launch two brokers
        state = _read_state(paths)
        pid = _running_pid(paths, state)
        if pid is not None:
            began = time.monotonic()
            _wait_ready(paths, f"{HOST}:{state['port']}", lambda: _is_our_broker(pid, paths),
                        timeout, hint="Stop it with `docstreams broker stop` and retry.")
            return _info(paths, state, launched=False, seconds=time.monotonic() - began)
        ensure_jars(settings, progress=progress)
        return _launch(paths, find_java(), state, timeout, progress)


def _launch(paths: _Paths, java: Path, state: dict[str, Any], timeout: float,
            progress: Progress | None) -> BrokerInfo:
    if _data_dir_in_use(paths.data):
        raise DocstreamsError(
            f"Another Kafka process is using {paths.data} but is not the one in "
            f"{paths.state}; stop it first (two brokers on one data directory corrupt it).",
            reason="broker_unavailable",
        )
    port, controller_port = pick_ports(state.get("port"), state.get("controller_port"))
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(server_properties(port=port, controller_port=controller_port,
                                              data_dir=paths.data))
    paths.log4j.write_text(log4j2_properties(paths.logs))
    cluster_id = _format_once(paths, java, state.get("cluster_id"), progress)
    bootstrap = f"{HOST}:{port}"
    _say(progress, f"Starting Kafka {KAFKA_VERSION} on {bootstrap} (data in {paths.data})...")
    began = time.monotonic()
    proc = _spawn(paths, java)
    state = {"pid": proc.pid, "port": port, "controller_port": controller_port,
             "cluster_id": cluster_id, "java": str(java), "kafka_version": KAFKA_VERSION,
             "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    _write_state(paths, state)
    try:
        _wait_ready(paths, bootstrap, lambda: proc.poll() is None, timeout)
    except DocstreamsError:
        _terminate(proc.pid, 10.0)
        _write_state(paths, {**state, "pid": None})
        raise
    return _info(paths, state, launched=True, seconds=time.monotonic() - began)


def _format_once(paths: _Paths, java: Path, cluster_id: str | None,
                 progress: Progress | None) -> str:
    """Format the data directory on first start; later starts reuse its cluster id."""
    meta = paths.data / "meta.properties"
    if meta.is_file():
        found = re.search(r"^cluster\.id=(\S+)", meta.read_text(), re.MULTILINE)
        return found.group(1) if found else (cluster_id or "")
    _say(progress, f"Formatting broker storage in {paths.data} (first start only)...")
    new_id = _storage_tool(paths, java, "random-uuid").strip().splitlines()[-1]
    _storage_tool(paths, java, "format", "--standalone", f"--cluster-id={new_id}",
                  "-c", str(paths.config))
    return new_id


def _storage_tool(paths: _Paths, java: Path, *args: str) -> str:
    argv = java_argv(java, paths, "kafka.tools.StorageTool", *args, heap=_TOOL_HEAP)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise DocstreamsError(f"kafka-storage {args[0]} failed (exit {done.returncode}):\n"
                              f"{(done.stdout + done.stderr).strip()}", reason="broker_unavailable")
    return done.stdout


# Popen objects of brokers this process launched: polled to reap them when they exit
# (a zombie still answers kill(pid, 0)), and kept so Python does not warn about them.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(paths: _Paths, java: Path) -> subprocess.Popen[bytes]:
    """Launch the broker in its own session so it outlives the CLI that started it."""
    argv = java_argv(java, paths, "kafka.Kafka", str(paths.config))
    with open(paths.console_log, "wb") as console:  # this run only: JVM errors land here
        proc = subprocess.Popen(argv, cwd=paths.root, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _children[proc.pid] = proc
    return proc


def _wait_ready(paths: _Paths, bootstrap: str, alive: Callable[[], bool], timeout: float,
                hint: str = "") -> None:
    """Poll metadata every 200 ms until the broker lists itself; raise with the log tail."""
    admin = _local_admin(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise DocstreamsError("\n".join(filter(None, [
                f"The Kafka broker for {bootstrap} exited while starting.", hint,
                _log_excerpt(paths)])), reason="broker_unavailable")
        remaining = deadline - time.monotonic()
        if _answers_metadata(admin, min(1.0, max(0.1, remaining))):
            return
        if time.monotonic() >= deadline:
            raise DocstreamsError("\n".join(filter(None, [
                f"The Kafka broker at {bootstrap} was not ready within {timeout:g} s.", hint,
                _log_excerpt(paths)])), reason="broker_unavailable", retryable=True)
        time.sleep(_POLL_S)


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    _log.warning("broker pid %s ignored SIGTERM for %.0f s; killing it", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not a running broker
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _running_pid(paths: _Paths, state: Mapping[str, Any]) -> int | None:
    """The pid recorded in broker.json, if that process is still our broker."""
    pid = state.get("pid")
    return pid if isinstance(pid, int) and _is_our_broker(pid, paths) else None


def _is_our_broker(pid: int, paths: _Paths) -> bool:
    """True if ``pid`` is alive and runs kafka.Kafka on this home's config (not a reused pid)."""
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid
    except OSError:
        return False
    return b"kafka.Kafka" in argv and str(paths.config).encode() in argv


def _data_dir_in_use(data: Path) -> bool:
    """Kafka holds a POSIX lock on ``<log.dir>/.lock`` while it runs."""
    try:
        fd = os.open(data / ".lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we got it
    return False


# --- small helpers -------------------------------------------------------------------


def pick_ports(port: int | None, controller_port: int | None) -> tuple[int, int]:
    """Reuse the previous ports when free (a stable bootstrap), else ask the OS for new ones."""
    keep = port if port and port_is_free(port) else None
    keep_c = controller_port if controller_port and port_is_free(controller_port) else None
    if keep_c == keep:
        keep_c = None
    fresh = iter(_free_ports(2, exclude={keep, keep_c}))
    return keep or next(fresh), keep_c or next(fresh)


def port_is_free(port: int) -> bool:
    # SO_REUSEADDR as the JVM sets it: sockets in TIME_WAIT do not count as taken.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_ports(count: int, exclude: set[int | None]) -> list[int]:
    """Ports the OS hands out for port 0; all sockets held at once so none repeats."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            if sock.getsockname()[1] not in exclude:
                ports.append(sock.getsockname()[1])
        return ports


@contextlib.contextmanager
def _exclusive(paths: _Paths) -> Iterator[None]:
    with open(paths.lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(paths: _Paths) -> dict[str, Any]:
    try:
        return dict(json.loads(paths.state.read_text()))
    except (OSError, ValueError):
        return {}


def _write_state(paths: _Paths, state: Mapping[str, Any]) -> None:
    scratch = paths.state.with_suffix(".tmp")
    scratch.write_text(json.dumps(dict(state), indent=2) + "\n")
    scratch.replace(paths.state)


def _info(paths: _Paths, state: Mapping[str, Any], *, launched: bool, seconds: float) -> BrokerInfo:
    return BrokerInfo(bootstrap=f"{HOST}:{state['port']}", pid=state["pid"],
                      controller_port=state["controller_port"], log_file=paths.server_log,
                      data_dir=paths.data, launched=launched, ready_seconds=round(seconds, 2))


def log_tail(path: Path, lines: int = _TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a possibly large file, reading only its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _log_excerpt(paths: _Paths) -> str:
    parts = []
    for path in (paths.console_log, paths.server_log):
        tail = log_tail(path)
        if tail:
            parts.append(f"Last lines of {path}:\n  " + "\n  ".join(tail))
    return "\n".join(parts) or f"(no broker log yet in {paths.logs})"


def _answers_metadata(admin: AdminClient, timeout: float) -> bool:
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def _local_admin(bootstrap: str) -> AdminClient:
    # Short reconnect backoff: librdkafka's grows to 10 s and would hide a ready broker.
    return _admin({"bootstrap.servers": bootstrap, "reconnect.backoff.ms": "100",
                   "reconnect.backoff.max.ms": "500"})


def _admin(conf: Mapping[str, str]) -> AdminClient:
    # "Connection refused" while a broker starts is expected: keep it off the terminal.
    return AdminClient(dict(conf), logger=_quiet_logger())


@functools.cache
def _quiet_logger() -> logging.Logger:
    quiet = logging.getLogger(f"{__name__}.probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return quiet


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _say(progress: Progress | None, message: str) -> None:
    _log.info(message)
    if progress is not None:
        progress(message)
