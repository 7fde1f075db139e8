"""``impression-gateway replay dlq [filters] | raw --since --until`` (``--dry-run`` lists, sends nothing).

Input: options; the broker named by ``--kafka-bootstrap`` (default: the consumers' setting), reached with the Kafka
security settings of ``serve``. Output: with ``--dry-run`` one JSON line per record it would send (ids, never content);
a JSON summary line last. Failure modes: exit 1 when the broker cannot be reached, refuses the TLS/SASL settings, or a
record could not be sent; exit 2 for bad arguments or unusable security settings. Logic: ``ops.replay``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from cli.args import add_kafka_security_options, add_setting, kafka_security, picked, refuse
from consumers.settings import ConsumerSettings


def when(text: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO 8601 date-time; without an offset, UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 date-time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _common(p: argparse.ArgumentParser) -> None:
    add_setting(p, "--kafka-bootstrap", ConsumerSettings, "kafka_bootstrap")
    add_kafka_security_options(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be sent (one JSON line each), send nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def register(sub: Any) -> None:
    p = sub.add_parser("replay", help="re-process dead letters, or re-drive a time range of reports.raw",
                       description="Produce records again onto the topic they came from (no consumer group).")
    actions = p.add_subparsers(dest="replay_command", required=True)
    d = actions.add_parser("dlq", help="dead letters (<topic>.dlq) back onto the topic they came from")
    d.add_argument("--topic", help="only the dead letters of this topic (e.g. reports.raw); default every .dlq topic")
    d.add_argument("--stage", help="only those rejected by this stage (normalise, route, infer, post, capture …)")
    d.add_argument("--code", help="only those with this reject code")
    d.add_argument("--accession", help="only this accession number")
    d.add_argument("--since", type=when, help="rejected at or after (YYYY-MM-DD or ISO date-time, UTC by default)")
    d.add_argument("--until", type=when, help="rejected before")
    _common(d)
    d.set_defaults(handler=cmd_replay_dlq)
    r = actions.add_parser("raw", help="re-drive the reports.raw records of a time range (processed idempotently)")
    r.add_argument("--since", type=when, required=True, help="produced at or after")
    r.add_argument("--until", type=when, required=True, help="produced before")
    _common(r)
    r.set_defaults(handler=cmd_replay_raw)


def _cluster(args: argparse.Namespace) -> Any:
    """The broker and kafka-python's TLS/SASL options; ``KafkaSecurityError`` when the broker refuses them."""
    from gateway.kafka_security import client_options, probe
    from ops.replay import Cluster

    bootstrap = ConsumerSettings(**picked(args, ("kafka_bootstrap",))).kafka_bootstrap
    security = kafka_security(args)
    asyncio.run(probe(bootstrap, security))  # the broker's refusal named now, not a client retrying until a timeout
    return Cluster(bootstrap, client_options(security))


def _run(args: argparse.Namespace, plan: Any) -> int:
    from gateway.kafka_security import KafkaSecurityError, problem
    from ops.replay import Replay, run
    from schemas import RetryLater

    def listed(item: Replay) -> None:
        print(json.dumps(item.listed()), flush=True)

    if (why := problem(kafka_security(args))) is not None:
        return refuse(why)
    try:
        cluster = _cluster(args)
        summary = run(cluster, partial(plan, cluster), dry_run=args.dry_run, progress=not args.no_progress,
                      listed=listed if args.dry_run else None)
    except KafkaSecurityError as exc:
        print(json.dumps({"error": "kafka_refused", "reason": str(exc)}))
        return 1
    except RetryLater as exc:
        print(json.dumps({"error": exc.code, "reason": exc.reason}))
        return 1
    print(json.dumps({"replay": args.replay_command, **vars(summary)}))
    return 1 if summary.failed else 0


def cmd_replay_dlq(args: argparse.Namespace) -> int:
    from ops.replay import DeadLetterFilter, dead_letter_plan

    filt = DeadLetterFilter(topic=args.topic, stage=args.stage, code=args.code, since=args.since, until=args.until,
                            accession=args.accession)
    return _run(args, lambda bootstrap, summary, bar: dead_letter_plan(bootstrap, filt, summary, bar))


def cmd_replay_raw(args: argparse.Namespace) -> int:
    from ops.replay import raw_plan

    if args.since >= args.until:
        return refuse("--since must be before --until")
    return _run(args, lambda bootstrap, summary, bar: raw_plan(bootstrap, args.since, args.until, summary, bar=bar))
