"""Argument helpers shared by every command group: dates, durations, options that mirror settings, refusals.

Input: command-line text and the settings classes. Output: typed values, help text naming each
option's environment variable and default (from the settings field, so the two cannot disagree),
settings objects. Failure modes: a malformed value → ``argparse.ArgumentTypeError`` (argparse
prints it and exits 2); ``refuse`` prints one JSON line on stderr and returns exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from gateway.settings import KafkaProtocol, KafkaSecurity, SaslMechanism
from model.settings import ModelSettings, WorkerSettings
from ops import settings as ops_settings


def duration_s(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` → seconds."""
    try:
        return ops_settings.duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def day(text: str) -> datetime:
    """``YYYY-MM-DD`` → midnight UTC of that day."""
    try:
        return ops_settings.utc_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def picked(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options the user gave (not None), by name: they override the environment."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def env_names(cls: type[BaseSettings], field: str) -> tuple[str, ...]:
    """The environment variables that set ``cls.<field>``, the documented one first."""
    alias = cls.model_fields[field].validation_alias
    names = [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
    names += [alias] if isinstance(alias, str) else []
    if not names or cls.model_config.get("populate_by_name"):
        names.append(f"{cls.model_config.get('env_prefix', '')}{field}")
    return tuple(dict.fromkeys(name.upper() for name in names))


def _shown(value: Any) -> str:
    if value is None or value == "" or value == ():
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)


def env_help(cls: type[BaseSettings], field: str, text: str | None = None, default: str | None = None) -> str:
    """``<text, else the field's description> (env NAME, default D)`` for an option that sets ``field``."""
    info = cls.model_fields[field]
    shown = default if default is not None else _shown(info.default)
    return f"{text or info.description} (env {env_names(cls, field)[0]}, default {shown})".replace("%", "%%")


def add_setting(p: argparse.ArgumentParser, flag: str, cls: type[BaseSettings], field: str, *,
                text: str | None = None, default: str | None = None, **kwargs: Any) -> None:
    """An option that overrides ``cls.<field>`` (dest = the field name; None when not given)."""
    if kwargs.get("action") == "store_true":
        kwargs.setdefault("default", None)  # not given → the environment decides
    elif "choices" not in kwargs:
        kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
    p.add_argument(flag, dest=field, help=env_help(cls, field, text, default), **kwargs)


def add_registry_options(p: argparse.ArgumentParser) -> None:
    add_setting(p, "--registry", ModelSettings, "adapter_registry", type=Path,
                default="<data-dir>/adapters/registry.json")
    add_setting(p, "--data-dir", ModelSettings, "data_dir", type=Path)


def add_model_key_option(p: argparse.ArgumentParser) -> None:
    """The model worker's API key file (README "Model worker authentication"); the key itself never an option."""
    add_setting(p, "--model-api-key-file", ModelSettings, "api_key_file", type=Path)


MODEL_OPTIONS = ("model_url", "data_dir", "adapter_registry", "api_key_file")  # model serve: its --api-key-file too


def model_settings(args: argparse.Namespace, worker: WorkerSettings | None = None) -> ModelSettings:
    """``ModelSettings`` from the environment, with ``--model-url`` / ``--data-dir`` / ``--registry`` when given."""
    return ModelSettings(**picked(args, MODEL_OPTIONS), **({"worker": worker} if worker else {}))


class _Refused(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string}: {self.help.split(' (env')[0] if self.help else 'refused'}")


KAFKA_SECURITY_OPTIONS = ("kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username",
                          "kafka_sasl_password_file", "kafka_ssl_ca", "kafka_ssl_system_ca", "kafka_ssl_cert",
                          "kafka_ssl_key")


def add_kafka_security_options(p: argparse.ArgumentParser) -> None:
    """TLS / SASL of every Kafka client (README "Kafka security"); the password only from a file or the environment."""
    k = KafkaSecurity
    add_setting(p, "--kafka-security-protocol", k, "kafka_security_protocol", choices=get_args(KafkaProtocol))
    add_setting(p, "--kafka-sasl-mechanism", k, "kafka_sasl_mechanism", choices=get_args(SaslMechanism))
    add_setting(p, "--kafka-sasl-username", k, "kafka_sasl_username")
    add_setting(p, "--kafka-sasl-password-file", k, "kafka_sasl_password_file", type=Path)
    # Named so that it is refused, not taken as an abbreviation of --kafka-sasl-password-file (argparse would).
    add_setting(p, "--kafka-sasl-password", k, "kafka_sasl_password", action=_Refused, nargs="?", default="unset",
                text="refused: a password is never an option (every local user can read the command line); "
                "use IG_KAFKA_SASL_PASSWORD_FILE or IG_KAFKA_SASL_PASSWORD")
    add_setting(p, "--kafka-ssl-ca", k, "kafka_ssl_ca", type=Path)
    add_setting(p, "--kafka-ssl-system-ca", k, "kafka_ssl_system_ca", action="store_true")
    add_setting(p, "--kafka-ssl-cert", k, "kafka_ssl_cert", type=Path)
    add_setting(p, "--kafka-ssl-key", k, "kafka_ssl_key", type=Path)


def kafka_security(args: argparse.Namespace) -> KafkaSecurity:
    """``KafkaSecurity`` from the environment, with the Kafka security options given."""
    return KafkaSecurity(**picked(args, KAFKA_SECURITY_OPTIONS))


def refuse(reason: str) -> int:
    print(json.dumps({"error": "refused", "reason": reason}), file=sys.stderr)
    return 2
