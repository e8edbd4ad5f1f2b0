"""The local broker's lifecycle on a real JVM, and topic creation on the session broker.

Lifecycle tests run a second broker with a home of their own (its libs linked to the
cached jars) so that stopping it never disturbs the session broker other tests use.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams import broker, names
from streams.errors import DocstreamsError
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.pipeline import own_broker_home


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory,
        local_broker_settings: Settings) -> Iterator[Settings]:
    settings = own_broker_home(tmp_path_factory.mktemp("own-broker"), local_broker_settings)
    yield settings
    broker.stop(settings)


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _create_topic(bootstrap: str, name: str) -> None:
    admin = _admin(bootstrap)  # keep a reference: a collected client fails its futures
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(timeout=30)


def _topics(bootstrap: str) -> set[str]:
    return set(_admin(bootstrap).list_topics(timeout=10).topics)


def test_start_is_idempotent_and_status_reports_ready(own: Settings) -> None:
    first = broker.start(own)
    again = broker.start(own)
    assert (again.pid, again.bootstrap, again.launched) == (first.pid, first.bootstrap, False)
    report = broker.status(own)
    assert report["running"] and report["ready"] and report["pid"] == first.pid
    assert report["bootstrap"] == first.bootstrap
    state = json.loads((own.home / "broker" / "broker.json").read_text())
    assert state["pid"] == first.pid and state["controller_port"] == first.controller_port
    assert first.log_file.is_file() and (first.data_dir / "meta.properties").is_file()


def test_restart_keeps_data_and_bootstrap(own: Settings) -> None:
    before = broker.start(own)
    _create_topic(before.bootstrap, "kept.across.restart")
    assert broker.stop(own) is True
    assert broker.status(own)["running"] is False
    assert broker.stop(own) is False  # nothing left to stop

    after = broker.start(own)
    assert after.launched and after.pid != before.pid
    assert (after.bootstrap, after.data_dir) == (before.bootstrap, before.data_dir)
    assert "kept.across.restart" in _topics(after.bootstrap)


def test_restart_moves_to_new_ports_when_the_old_ones_are_taken(own: Settings) -> None:
    before = broker.start(own)
    _create_topic(before.bootstrap, "kept.across.port.change")
    broker.stop(own)
    squatters = []
    for port in (int(before.bootstrap.rsplit(":", 1)[1]), before.controller_port):
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        squatters.append(sock)
    try:
        after = broker.start(own)
    finally:
        for sock in squatters:
            sock.close()
    assert after.bootstrap != before.bootstrap
    assert after.controller_port != before.controller_port
    assert "kept.across.port.change" in _topics(after.bootstrap)
    config = (own.home / "broker" / "server.properties").read_text()
    assert f"CONTROLLER://127.0.0.1:{after.controller_port}" in config


def test_failed_start_quotes_the_log_and_leaves_nothing_running(own: Settings) -> None:
    broker.stop(own)
    with pytest.raises(DocstreamsError) as caught:
        broker.start(own, timeout=0.5)  # a JVM is never ready this fast
    assert "Last lines of" in str(caught.value)
    assert broker.status(own)["running"] is False


def test_ensure_topics_creates_partitions_and_cleanup_policies(settings: Settings,
                                                               bootstrap: str) -> None:
    changelog = names.changelog_topic(settings.topic_prefix, "parse", "docs.submitted")
    created = ensure_topics(settings, bootstrap, [changelog], compacted={changelog})
    physical = {names.topic(settings.topic_prefix, n) for n in names.ALL_TOPICS} | {changelog}
    assert set(created) == physical

    admin = AdminClient(settings.kafka_common(bootstrap))
    metadata = admin.list_topics(timeout=10)
    for name in physical:
        assert len(metadata.topics[name].partitions) == settings.partitions, name

    def config_of(logical_or_physical: str) -> dict[str, str]:
        name = (logical_or_physical if logical_or_physical == changelog
                else names.topic(settings.topic_prefix, logical_or_physical))
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        entries = admin.describe_configs([resource])[resource].result(timeout=10)
        return {key: entry.value for key, entry in entries.items()}

    assert config_of(names.CONTROL)["cleanup.policy"] == "compact"
    assert config_of(changelog)["cleanup.policy"] == "compact"
    assert config_of(names.SUBMITTED)["cleanup.policy"] == "delete"
    assert config_of(names.EVENTS)["retention.ms"] == "-1"
    assert config_of(names.EXECUTIONS)["retention.ms"] == "-1"

    assert ensure_topics(settings, bootstrap, [changelog], compacted={changelog}) == []


def test_resolve_bootstrap_uses_the_running_local_broker(own: Settings) -> None:
    info = broker.start(own)
    assert broker.resolve_bootstrap(own, start=False) == info.bootstrap
    assert broker.resolve_bootstrap(own.replace(bootstrap="elsewhere:9092")) == "elsewhere:9092"


def test_broker_that_exits_at_start_up_is_reported_with_its_log(own: Settings,
                                                                tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "libs").symlink_to(own.home / "broker" / "libs")
    scratch = Settings(home=tmp_path, bootstrap=None)
    broker.start(scratch)
    broker.stop(scratch)
    meta = tmp_path / "broker" / "data" / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))
    with pytest.raises(DocstreamsError, match="exited while starting") as caught:
        broker.start(scratch)
    assert "doesn't match previous node id" in str(caught.value)  # quoted from server.log
