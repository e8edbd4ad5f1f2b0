"""The local broker's configuration, Java discovery and CLI, without starting a JVM."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams import broker, names
from streams.cli_broker import broker as broker_cli
from streams.errors import ConfigError, DocstreamsError
from streams.settings import Settings
from streams.topics import topic_configs

REPO = Path(__file__).resolve().parents[2]


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = _props(broker.server_properties(port=19092, controller_port=19093,
                                            data_dir=tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.cleaner.dedupe.buffer.size"] == "2097152"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "1", key


def test_log4j_config_writes_under_the_logs_dir(tmp_path: Path) -> None:
    props = _props(broker.log4j2_properties(tmp_path / "logs"))
    assert props["appender.server.fileName"] == f"{tmp_path / 'logs'}/server.log"
    assert props["rootLogger.appenderRef.server.ref"] == "server"


def test_java_classpath_glob_is_one_argument(tmp_path: Path) -> None:
    paths = broker._Paths.of(Settings(home=tmp_path, bootstrap=None))
    argv = broker.java_argv(Path("/usr/bin/java"), paths, "kafka.Kafka", "server.properties")
    cp = argv.index("-cp")
    assert argv[cp + 1] == f"{tmp_path}/broker/libs/*"
    assert argv[cp + 2:] == ["kafka.Kafka", "server.properties"]
    assert "-Xmx1g" in argv and "-Xms256m" in argv


@pytest.mark.parametrize(("output", "version"), [
    ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
    ('openjdk version "21" 2023-09-19', 21),
    ('java version "1.8.0_292"', 8),
    ('openjdk version "25-ea" 2025-09-16', 25),
    ('openjdk version "11.0.2" 2019-01-15 LTS', 11),
    ("bash: java: command not found", None),
])
def test_parse_java_version(output: str, version: int | None) -> None:
    assert broker.parse_java_version(output) == version


def _fake_java(home: Path, version: str) -> Path:
    java = home / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2020-01-01' >&2\n")
    java.chmod(0o755)
    return java


def test_find_java_skips_too_old_java_home(tmp_path: Path) -> None:
    _fake_java(tmp_path / "old", "1.8.0_292")
    new = _fake_java(tmp_path / "new", "17.0.2")
    env = {"JAVA_HOME": str(tmp_path / "old"), "PATH": str(new.parent)}
    assert broker.find_java(env, jvm_root=tmp_path / "none") == new


def test_find_java_looks_in_the_jvm_root(tmp_path: Path) -> None:
    java = _fake_java(tmp_path / "jvm" / "java-17-openjdk-amd64", "17.0.15")
    assert broker.find_java({"PATH": str(tmp_path)}, jvm_root=tmp_path / "jvm") == java


def test_find_java_says_what_to_install(tmp_path: Path) -> None:
    _fake_java(tmp_path / "jvm" / "java-11", "11.0.2")
    with pytest.raises(ConfigError) as caught:
        broker.find_java({"PATH": str(tmp_path)}, jvm_root=tmp_path / "jvm")
    assert "apt-get install openjdk-17-jre-headless" in str(caught.value)
    assert "(11)" in str(caught.value)


def test_ports_are_reused_when_free_and_replaced_when_taken() -> None:
    port, controller = broker.pick_ports(None, None)
    assert port != controller
    assert broker.pick_ports(port, controller) == (port, controller)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        new_port, same_controller = broker.pick_ports(port, controller)
    assert new_port not in (port, controller) and same_controller == controller


def test_pom_pins_the_versions_the_code_checks() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(REPO / "tools" / "kafka" / "pom.xml").getroot()
    assert root.findtext("m:packaging", namespaces=ns) == "pom"
    assert root.findtext("m:properties/m:kafka.version", namespaces=ns) == broker.KAFKA_VERSION
    assert root.findtext("m:properties/m:log4j.version", namespaces=ns) == broker.LOG4J_VERSION


def test_ensure_jars_without_maven_says_what_to_install(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="apt-get install maven"):
        broker.ensure_jars(Settings(home=tmp_path, bootstrap=None))


def test_ensure_jars_is_a_no_op_when_the_kafka_jar_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "broker" / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{broker.KAFKA_VERSION}.jar").touch()
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn: must not be needed
    assert broker.ensure_jars(Settings(home=tmp_path, bootstrap=None)) is False


def test_configured_bootstrap_starts_nothing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, bootstrap="kafka-1.example:9092")
    assert broker.resolve_bootstrap(settings) == "kafka-1.example:9092"
    assert not (tmp_path / "broker").exists()


def test_no_broker_and_no_start_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, bootstrap=None)
    with pytest.raises(DocstreamsError, match="docstreams broker start") as caught:
        broker.resolve_bootstrap(settings, start=False)
    assert caught.value.reason == "broker_unavailable"
    assert broker.stop(settings) is False
    assert broker.status(settings)["running"] is False


def test_stale_pid_is_not_taken_for_a_broker(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, bootstrap=None)
    (tmp_path / "broker").mkdir()
    # pid 1 is alive but is not kafka.Kafka on this home's server.properties
    (tmp_path / "broker" / "broker.json").write_text(json.dumps({"pid": 1, "port": 9}))
    assert broker.status(settings)["running"] is False
    assert broker.stop(settings) is False


def test_log_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {n}\n" for n in range(10_000)))
    assert broker.log_tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert broker.log_tail(tmp_path / "missing.log") == []


def test_topic_configs_prefix_compaction_and_retention() -> None:
    settings = Settings(home=Path("/tmp/x"), bootstrap=None, topic_prefix="t1.")
    changelog = names.changelog_topic("t1.", "parse", "docs.submitted")
    configs = topic_configs(settings, compacted={changelog}, audit_retention_ms=-1)
    assert set(configs) == {f"t1.{n}" for n in names.ALL_TOPICS} | {changelog}
    assert configs["t1.docs.control"]["cleanup.policy"] == "compact"
    assert configs[changelog]["cleanup.policy"] == "compact"
    assert configs["t1.docs.submitted"] == {"cleanup.policy": "delete"}
    assert configs["t1.docs.events"]["retention.ms"] == "-1"
    assert configs["t1.docs.executions"]["retention.ms"] == "-1"
    replicated = topic_configs(settings.replace(replication=3))
    assert replicated["t1.docs.parsed"]["min.insync.replicas"] == "2"


def test_cli_help_teaches_where_state_lives_and_how_to_use_a_cluster() -> None:
    result = CliRunner().invoke(broker_cli, ["--help"])
    assert result.exit_code == 0
    assert "DOCSTREAMS_BOOTSTRAP" in result.output and ".docstreams/broker" in result.output


def test_cli_status_json_without_broker(tmp_path: Path) -> None:
    env = {"DOCSTREAMS_HOME": str(tmp_path), "DOCSTREAMS_BOOTSTRAP": ""}
    result = CliRunner().invoke(broker_cli, ["status", "--json"], env=env)
    assert result.exit_code == 1, result.output  # not answering: scripts can wait on it
    report = json.loads(result.output)
    assert report["mode"] == "local" and report["running"] is False


def test_cli_start_with_a_configured_cluster_starts_nothing(tmp_path: Path) -> None:
    env = {"DOCSTREAMS_HOME": str(tmp_path), "DOCSTREAMS_BOOTSTRAP": "kafka-1.example:9092"}
    result = CliRunner().invoke(broker_cli, ["start"], env=env)
    assert result.exit_code == 0 and "no local broker is started" in result.output
    assert not (tmp_path / "broker").exists()


def test_cli_errors_are_one_message_and_exit_1(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ConfigError("install OpenJDK 17: apt-get install openjdk-17-jre-headless")

    monkeypatch.setattr(broker, "start", refuse)
    env = {"DOCSTREAMS_HOME": str(tmp_path), "DOCSTREAMS_BOOTSTRAP": ""}
    result = CliRunner().invoke(broker_cli, ["start"], env=env)
    assert result.exit_code == 1
    assert "apt-get install openjdk-17-jre-headless" in result.output
    assert "Traceback" not in result.output


def test_a_repeated_client_log_line_passes_once_per_interval() -> None:
    """While a broker is away every client repeats its connect failure several times a
    second; a person's terminal gets it once per interval (numbers aside)."""
    import logging

    from streams.kafka import RepeatFilter

    def line(msg: str) -> logging.LogRecord:
        return logging.LogRecord("docstreams.kafka", logging.ERROR, __file__, 1, msg, (), None)

    f = RepeatFilter(every_s=60.0)
    failed = "127.0.0.1:{}/bootstrap: Connect to ipv4#127.0.0.1:{} failed (after {}ms)"
    assert f.filter(line(failed.format(55069, 55069, 0)))
    assert not f.filter(line(failed.format(55069, 55069, 3)))  # the same, but for numbers
    assert f.filter(line("FAIL: all brokers down"))  # another line passes
    f.every_s = 0.0
    assert f.filter(line(failed.format(1, 1, 1)))  # once the interval has passed
