"""``import cli.main`` (what ``impression-gateway --help`` does) stays light: the heavy parts load in the handlers.

Each check runs a fresh interpreter, so nothing an earlier test imported hides a module-level import.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

# What made `import cli.main` take seconds (python -X importtime: 5.5 s, 3.1 s of it consumers.flow and its
# retrieval drafter's scikit-learn/SciPy/pandas), and the rest a command needs only once it runs: the model stack,
# the HTTP app, the store and its migrations, the Kafka clients, the logs' structlog.
HEAVY = ("faust", "sklearn", "scipy", "pandas", "torch", "vllm", "transformers", "peft", "consumers.flow",
         "consumers.serve", "fastapi", "uvicorn", "sqlalchemy", "alembic", "aiokafka", "kafka", "structlog")


def loaded_after(code: str) -> set[str]:
    """The modules in ``sys.modules`` once ``code`` ran in a fresh interpreter of the repo's venv."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY))


def test_importing_the_command_loads_none_of_the_heavy_parts() -> None:
    modules = loaded_after("import cli.main")
    assert "cli.serve" in modules and "cli.demo" in modules  # every command group is registered…
    assert heavy(modules) == []  # …without its handlers' imports


def test_building_the_parser_for_help_loads_none_of_them_either() -> None:
    # build_parser() registers every subcommand; format_help() renders each option's help from the settings fields.
    code = ("import argparse\nfrom cli.main import build_parser\nparser = build_parser()\nparser.format_help()\n"
            "for action in parser._subparsers._group_actions:\n"
            "    for sub in action.choices.values():\n        sub.format_help()")
    assert heavy(loaded_after(code)) == []


def test_the_probe_sees_a_heavy_import_when_there_is_one() -> None:
    # The check above would pass vacuously if the probe could not see a module-level import: the demo's
    # walkthrough imports the flow at module level, and the probe must say so.
    assert "consumers.flow" in heavy(loaded_after("import cli.demo_walkthrough"))
