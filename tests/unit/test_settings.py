"""Settings tell the truth: each environment variable a settings class names is the one it reads, the
production stack sets only variables that are read, the README names every variable, and every option
of ``serve``, ``model serve`` and ``retrain`` names its variable (the field the option sets)."""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from cli.args import env_names
from cli.main import build_parser
from cli.serve import config_from_args
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings, KafkaSecurity
from model.settings import ModelSettings, WorkerSettings
from ops.settings import BackfillSettings, DriftSettings, MetricsSettings, OpsSettings, RetrainSettings, ShadowSettings
from tests.conftest import REPO

SETTINGS: tuple[type[BaseSettings], ...] = (GatewaySettings, KafkaSecurity, ConsumerSettings, ModelSettings,
                                            WorkerSettings, DriftSettings, RetrainSettings, MetricsSettings,
                                            ShadowSettings, BackfillSettings)
COMMANDS = (("serve",), ("model", "serve"), ("retrain",))


def _is_part(info: FieldInfo) -> bool:
    return isinstance(info.annotation, type) and issubclass(info.annotation, BaseSettings)


def _variables() -> dict[str, tuple[type[BaseSettings], str]]:
    """Every environment variable of every settings class → (class, field)."""
    found: dict[str, tuple[type[BaseSettings], str]] = {}
    for cls in SETTINGS:
        for field, info in cls.model_fields.items():
            if not _is_part(info):
                for name in env_names(cls, field):
                    assert name not in found, f"{name} is read by {found[name]} and {cls.__name__}.{field}"
                    found[name] = (cls, field)
    return found


VARIABLES = _variables()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*VARIABLES, "IG_MODEL_MODEL_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _sentinel(info: FieldInfo) -> str:
    """An environment value that differs from the field's default."""
    kind = info.annotation
    if get_origin(kind) in (Union, UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    kind = get_args(kind)[0] if get_origin(kind) is Annotated else kind
    if get_origin(kind) is Literal:
        return str(next(choice for choice in get_args(kind) if choice != info.default))
    if kind is bool:
        return "false" if info.default else "true"
    if kind in (int, float):
        return str(info.default + 7 if isinstance(info.default, int | float) else 7)
    if get_origin(kind) is tuple:
        return '["sentinel"]'
    if get_origin(kind) is dict:
        return "sentinel=sentinel"
    return "2020-01-02" if kind is datetime else "sentinel"


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_each_named_variable_is_read(name: str, clean_env: pytest.MonkeyPatch) -> None:
    cls, field = VARIABLES[name]
    default = getattr(cls(), field)
    clean_env.setenv(name, _sentinel(cls.model_fields[field]))
    assert getattr(cls(), field) != default, f"{name} does not set {cls.__name__}.{field}"


def test_the_model_url_is_ig_model_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("IG_MODEL_MODEL_URL", "http://old-name:8000")
    assert ModelSettings().model_url == ""  # the prefixed field name is not a second, hidden name
    clean_env.setenv("IG_MODEL_URL", "http://vllm:8000")
    assert ModelSettings().model_url == "http://vllm:8000"
    assert ModelSettings(model_url="http://given:1").model_url == "http://given:1"


def _compose_value(text: str) -> str:
    """``${VAR:-default}`` → default, ``${VAR:?message}`` → a placeholder (compose interpolation)."""
    return re.sub(r"\$\{\w+(?::([-?])([^}]*))?\}", lambda m: m.group(2) if m.group(1) == "-" else "set", text)


def _compose_environment() -> list[tuple[str, str, str]]:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]  # anchors and << resolved
    found = []
    for service_name, service in services.items():
        env: Any = service.get("environment") or {}
        pairs = env.items() if isinstance(env, dict) else (item.split("=", 1) for item in env)
        found += [(service_name, name, _compose_value(str(value))) for name, value in pairs]
    return found


def test_every_compose_variable_is_read(clean_env: pytest.MonkeyPatch) -> None:
    ours = [(s, n, v) for s, n, v in _compose_environment() if n.startswith("IG_") or n == "DATABASE_URL"]
    assert {"IG_MODEL_URL", "DATABASE_URL", "IG_KAFKA_BOOTSTRAP"} <= {n for _, n, _ in ours}
    for service, name, value in ours:
        assert name in VARIABLES, f"docker-compose.yml ({service}) sets {name}, which no settings class reads"
        cls, field = VARIABLES[name]
        clean_env.setenv(name, value)
        assert str(getattr(cls(), field)) == value, f"{service}: {name}={value!r} not read into {cls.__name__}.{field}"
        clean_env.delenv(name)


def test_every_variable_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [name for name in VARIABLES if not re.search(rf"`{name}`", readme)]
    assert not missing, f"README.md does not name {missing}"


def _command(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_option_names_its_variable(command: tuple[str, ...]) -> None:
    options = [a for a in _command(*command)._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 10
    for action in options:
        flag = action.option_strings[0]
        match = re.search(r"\(env ([A-Z][A-Z0-9_]*), default [^)]+\)", action.help or "")
        assert match, f"{' '.join(command)} {flag}: the help names no environment variable"
        assert match.group(1) in VARIABLES, f"{flag}: {match.group(1)} is not read by any settings class"
        assert VARIABLES[match.group(1)][1] == action.dest, f"{flag} sets {action.dest}, not the field of {match.group(1)}"


def test_options_override_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("IG_MLLP_PORT", "2600")
    clean_env.setenv("IG_ROLE", "gateway")
    clean_env.setenv("IG_DRIFT_MIN_SAMPLES", "5")
    config = config_from_args(build_parser().parse_args(["serve", "--http-port", "9000"]))
    assert (config.gateway.mllp_port, config.gateway.http_port, config.roles) == (2600, 9000, frozenset({"gateway"}))
    assert config.ops.drift.min_samples == 5
    config = config_from_args(build_parser().parse_args(["serve", "--role", "all", "--mllp-port", "0"]))
    assert (config.gateway.mllp_port, config.roles) == (0, frozenset({"gateway", "consumers"}))


def test_retrain_options_and_durations(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("IG_RETRAIN_EVERY", "7d")
    clean_env.setenv("IG_RETRAIN_SINCE", "2025-03-01")
    retrain = OpsSettings().retrain
    assert (retrain.every, retrain.poll, retrain.serve_timeout) == (7 * 86400, 60.0, 900.0)
    assert retrain.since is not None and retrain.since.isoformat() == "2025-03-01T00:00:00+00:00"


def test_retrain_without_a_route_is_refused(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["retrain"])  # the handler, not main(): main configures the logs
    assert args.handler(args) == 2
    assert "IG_RETRAIN_ROUTE" in capsys.readouterr().err
