"""Prompt rendering: an ``InferenceRequest`` → chat messages for the OpenAI-compatible model server.

Stage: infer (and the LoRA training data, which must see exactly the prompts served). Input: ``InferenceRequest``
(findings, language, procedure, ``route.prompt_template``). Output: ``(messages, prompt_version)``: system + user
messages and the template's file name without ``.j2``. Failure modes: ``Reject("prompt_unknown")`` for a template that
does not exist. Templates (``model/inference/templates/*.j2``) and the language rule: model/README.md.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import jinja2

from schemas.errors import Reject
from schemas.events import InferenceRequest, ReportEvent
from schemas.language import detect_language

# Templates are data: ``templates/*.j2``, each exporting a ``system`` block assignment; the rendered
# body is the user message.
PROMPTS_DIR = Path(__file__).with_name("templates")
DEFAULT_TEMPLATE = "impression_v1"
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

Message = dict[str, str]


@cache
def _environment() -> jinja2.Environment:
    # Plain text, not HTML: autoescape off. StrictUndefined so a typo in a template fails loudly.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PROMPTS_DIR),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def template_version(name: str) -> str:
    """The version string of a template name as routes spell it (``impression_v1`` or ``impression_v1.j2``)."""
    return name.removesuffix(".j2")


def available_templates() -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in PROMPTS_DIR.glob("*.j2")))


def prompt_language(event: ReportEvent) -> str:
    """``zh`` for Chinese findings (by tag or by script), else the primary language tag."""
    tag = (event.language or "en").split("-")[0].lower()
    # The script wins over a default "en" tag, by the same detector the gateway tags events with.
    if tag == "zh" or detect_language(event.findings) == "zh":
        return "zh"
    return tag


def _template(version: str, route: str) -> jinja2.Template:
    if not _TEMPLATE_NAME.match(version):
        raise Reject("prompt_unknown", f"route {route!r} names an invalid prompt template")
    try:
        return _environment().get_template(f"{version}.j2")
    except jinja2.TemplateNotFound:
        raise Reject("prompt_unknown", f"route {route!r} names prompt template {version!r}, which does not exist") from None


def render_messages(request: InferenceRequest) -> tuple[list[Message], str]:
    """The chat messages for one request and the prompt version that produced them."""
    version = template_version(request.route.prompt_template or DEFAULT_TEMPLATE)
    event = request.event
    module = _template(version, request.route.name).make_module(
        {
            "language": prompt_language(event),
            "procedure": event.procedure_text or f"{event.modality.value} {event.body_system.value}",
            "modality": event.modality.value,
            "body_system": event.body_system.value,
            "findings": event.findings.strip(),
        }
    )
    system = str(getattr(module, "system", "")).strip()
    user = str(module).strip()
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    return messages, version
