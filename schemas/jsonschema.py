"""Export the contracts as JSON Schema files beside this module (``schemas/json/*.schema.json``).

Run ``python -m schemas.jsonschema`` after changing a model; a test fails when the files drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.alerts import Alert
from schemas.events import DeadLetter, DraftImpression, EditRecord, InferenceRequest, PostResult, ReportEvent

EXPORTED: tuple[type[BaseModel], ...] = (
    ReportEvent,
    InferenceRequest,
    DraftImpression,
    PostResult,
    EditRecord,
    DeadLetter,
    Alert,
)
JSON_DIR = Path(__file__).parent / "json"


def rendered() -> dict[str, str]:
    """File name → JSON Schema text, as it should be on disk."""
    return {
        f"{model.__name__}.schema.json": json.dumps(model.model_json_schema(mode="serialization"), indent=2, sort_keys=True)
        + "\n"
        for model in EXPORTED
    }


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (JSON_DIR / name).write_text(text, encoding="utf-8")
        print(JSON_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
