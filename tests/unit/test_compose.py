"""docker-compose.yml describes the production stack; Docker cannot run here, so check its shape and
that every service command of ours is a real command of the CLI (parsed by the real parser)."""

from __future__ import annotations

import yaml

from cli.main import build_parser
from tests.conftest import REPO


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_production_stack_has_every_part() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "vllm", "gateway", "consumers"} <= set(services)
    kafka_env = services["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "zookeeper" not in services
    worker = services["vllm"]["command"]
    assert worker[:1] == ["impression-gateway"] and "model" in worker and "serve" in worker  # the supervisor
    assert "--registry" in worker and services["retrain"]["profiles"] == ["retrain"]
    assert services["gateway"]["environment"]["DATABASE_URL"].startswith("postgresql")


def test_every_service_command_is_a_cli_command() -> None:
    parser = build_parser()
    ours = {name: s for name, s in _compose()["services"].items() if "build" in s}
    assert ours, "no service runs our image"
    for name, service in ours.items():
        argv = [arg.replace("${RETRAIN_ROUTE:-ct_chest}", "ct_chest") for arg in service["command"]]
        assert argv[0] == "impression-gateway", name
        args = parser.parse_args(argv[1:])  # SystemExit (a test failure) on an unknown command/option
        assert args.command in {"serve", "model", "retrain"}, name
