"""Small waits and readers the integration tests share."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from confluent_kafka import Consumer, TopicPartition


def require_system_tool(path: str, package: str) -> Path:
    """A Debian tool a test drives for real; skipped without it locally, a failure under CI (which installs it)."""
    tool = Path(path)
    if not tool.exists():
        reason = f"{path} is missing (apt-get install {package}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # a skip in CI would hide a broken install step
        pytest.skip(reason)
    return tool


def wait_for(condition: Callable[[], bool], timeout: float, what: str, check: Callable[[], None] = lambda: None) -> None:
    """Poll ``condition`` until true; ``check`` raises early if a component died. Bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def read_topic(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30.0) -> list:
    """Messages of a topic read by assign() from the start (no group join), until ``expected`` arrived.

    Counts messages rather than trusting high watermarks, which the embedded broker reports wrongly.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(100, timeout=0.5) if not m.error()]
    finally:
        consumer.close()
    return messages


@contextmanager
def serve_in_thread(app, **config) -> Iterator[str]:
    """uvicorn serving ``app`` on a free loopback port, in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", **({"log_level": "warning"} | config)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
