"""Consumer recovery: how long partitions go unprocessed after a faust consumer is ``kill -9``ed.

Starts one embedded Tansu broker and faust workers built by ``consumers.app._faust_app`` (the app's own consumer
settings: session, heartbeat, rebalance and request timeouts) as separate processes, each appending what it
processes to a file, while one message per partition is produced every 0.5 s. Two cases: two workers in one group,
one killed (the survivor must take its partitions); the only worker killed and a new one started. Prints the
longest produce → processed latency of each (the stall); ``--faust-defaults`` runs faust's own defaults instead.

    python bench/recovery.py [--faust-defaults]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

TOPIC, PARTITIONS = "bench.recovery", 4
FAUST_DEFAULTS = {"consumer_session_timeout_s": 60.0, "consumer_heartbeat_interval_s": 3.0,
                  "consumer_rebalance_timeout_s": 60.0, "broker_request_timeout_s": 90.0}


def worker(bootstrap: str, out: str, defaults: bool) -> None:
    """One consumer process: the app's faust settings, one agent that records what it processed."""
    import faust

    from consumers.app import _faust_app
    from consumers.settings import ConsumerSettings

    app = _faust_app(ConsumerSettings(kafka_bootstrap=bootstrap, app_id="bench-recovery",
                                      **(FAUST_DEFAULTS if defaults else {})))
    topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, partitions=PARTITIONS)

    @app.agent(topic)
    async def record(stream: Any) -> AsyncIterator[None]:
        async for value in stream:
            with open(out, "a") as f:
                f.write(f"{os.getpid()} {value.decode()} {time.time()}\n")
            yield None

    faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()


class Run:
    def __init__(self, bootstrap: str, tmp: Path, defaults: bool):
        self.bootstrap, self.tmp, self.defaults = bootstrap, tmp, defaults
        self.out = tmp / "processed.txt"
        self.sent: dict[str, float] = {}
        self.n = 0

    def start(self, name: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, __file__, "--worker", self.bootstrap, str(self.out)] + (["--faust-defaults"]
                                                                                       if self.defaults else [])
        with open(self.tmp / f"{name}.log", "wb") as log:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.tmp)

    def processed(self) -> list[tuple[str, str, float]]:
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [(pid, value, float(at)) for pid, value, at in (line.split() for line in lines)]

    async def produce(self, producer: Any, label: str, done: Callable[[list[str]], bool], limit_s: float) -> float:
        """One message per partition every 0.5 s until ``done``; the longest produce → processed latency."""
        mine: list[str] = []
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and not done(mine):
            for part in range(PARTITIONS):
                value = f"{label}-{self.n}-{part}"
                self.sent[value] = time.time()
                mine.append(value)
                await producer.send_and_wait(TOPIC, value.encode(), partition=part)
            self.n += 1
            await asyncio.sleep(0.5)
        at = {value: when for _, value, when in self.processed()}
        return max((at[v] - self.sent[v] for v in mine if v in at), default=float("nan"))

    def caught_up(self, mine: list[str], after_s: float, started: float) -> bool:
        """Every message but the last round processed, a while after the fault."""
        at = {value for _, value, _ in self.processed()}
        return time.monotonic() - started > after_s and len(mine) > 2 * PARTITIONS and all(
            v in at for v in mine[:-PARTITIONS])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def measure(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from consumers.embedded import EmbeddedBroker

    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    with EmbeddedBroker(tmp) as broker:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        run = Run(broker.bootstrap, tmp, args.faust_defaults)
        first, second = run.start("first"), run.start("second")
        try:
            both = lambda mine: len({pid for pid, v, _ in run.processed() if v in mine[-2 * PARTITIONS:]}) == 2  # noqa: E731
            await run.produce(producer, "warm", both, 180)
            _kill(first)
            killed = time.monotonic()
            one_of_two = await run.produce(producer, "survivor", lambda m: run.caught_up(m, 5, killed), 240)
            _kill(second)
            third = run.start("third")
            restarted = time.monotonic()
            restart = await run.produce(producer, "restart", lambda m: run.caught_up(m, 5, restarted), 240)
            _kill(third)
        finally:
            for proc in (first, second):
                if proc.poll() is None:
                    _kill(proc)
            await producer.stop()
    kind = "faust defaults" if args.faust_defaults else "the app's consumer settings"
    print(f"consumer recovery with {kind}, embedded Tansu broker, {PARTITIONS} partitions, kill -9:")
    print(f"  two in one group, one killed: longest stall {one_of_two:.1f} s (target < 30 s)")
    print(f"  the only one killed, a new one started: longest stall {restart:.1f} s, its start included")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faust-defaults", action="store_true", help="faust's own timeouts (60/3/60/90 s)")
    parser.add_argument("--worker", nargs=2, metavar=("BOOTSTRAP", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, defaults=args.faust_defaults)
        return 0
    return asyncio.run(measure(args))


if __name__ == "__main__":
    sys.exit(main())
