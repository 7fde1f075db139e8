"""Prompt rendering: an ``InferenceRequest`` → chat messages for the OpenAI-compatible model server.

Stage: infer (and training, export, evaluation: they must see exactly the prompts served). Input: ``InferenceRequest``,
the site's style (``model.inference.styles``). Output: ``(messages, prompt_version)``, the version
``<template>@<8 hex of sha256(template text, style)>``. Failure modes: ``Reject("prompt_unknown")`` (no such template);
a template that does not compile or a malformed style file: ``ValueError`` at load (start-up). See model/README.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from model.inference.styles import SiteStyles
from schemas.errors import Reject
from schemas.events import InferenceRequest, ReportEvent
from schemas.language import detect_language

# Templates are data: ``templates/*.j2``, each exporting a ``system`` block assignment; the rendered
# body is the user message.
PROMPTS_DIR = Path(__file__).with_name("templates")
DEFAULT_TEMPLATE = "impression_v1"
VERSION_MARK = "@"  # prompt_version = name@digest; a route or an export may name a template by either
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

Message = dict[str, str]


def template_name(prompt: str) -> str:
    """The template a route or a recorded prompt version names: ``impression_v1``, ``impression_v1.j2`` or
    ``impression_v1@1a2b3c4d`` → ``impression_v1`` (a recorded version renders with the template's current text)."""
    return prompt.split(VERSION_MARK, 1)[0].removesuffix(".j2")


def prompt_digest(source: str, style: str) -> str:
    """8 hex of sha256(template text NUL style block): what makes two prompts of one template differ."""
    return hashlib.sha256(source.encode("utf-8") + b"\x00" + style.encode("utf-8")).hexdigest()[:8]


@dataclass(frozen=True)
class _Template:
    source: str
    compiled: jinja2.Template


class PromptSet:
    """Every template of a folder, compiled once at load, and the site styles they are rendered with."""

    def __init__(self, templates_dir: Path = PROMPTS_DIR, styles: SiteStyles | None = None):
        # Plain text, not HTML: autoescape off. StrictUndefined so a typo in a template fails loudly.
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir), autoescape=False,
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=False, auto_reload=False)
        self.styles = styles or SiteStyles.load()
        self._templates: dict[str, _Template] = {}
        for path in sorted(Path(templates_dir).glob("*.j2")):
            source = path.read_text(encoding="utf-8")
            try:
                self._templates[path.stem] = _Template(source, env.from_string(source))
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"prompt template {path}: line {exc.lineno}: {exc.message}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._templates))

    def template(self, prompt: str, route: str) -> tuple[str, _Template]:
        name = template_name(prompt)
        if not _TEMPLATE_NAME.match(name):
            raise Reject("prompt_unknown", f"route {route!r} names an invalid prompt template")
        if name not in self._templates:
            raise Reject("prompt_unknown", f"route {route!r} names prompt template {name!r}, which does not exist")
        return name, self._templates[name]

    def render(self, request: InferenceRequest) -> tuple[list[Message], str]:
        """The chat messages for one request and the prompt version that produced them."""
        name, template = self.template(request.route.prompt_template or DEFAULT_TEMPLATE, request.route.name)
        event = request.event
        site = self.styles.for_site(event.site)
        language = prompt_language(event, site.language)
        style = site.text(language)
        module = template.compiled.make_module({
            "site": event.site,
            "language": language,
            "procedure": event.procedure_text or f"{event.modality.value} {event.body_system.value}",
            "modality": event.modality.value,
            "body_system": event.body_system.value,
            "style": style,
            "findings": event.findings.strip(),
        })
        system = str(getattr(module, "system", "")).strip()
        user = str(module).strip()
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return messages, f"{name}{VERSION_MARK}{prompt_digest(template.source, style)}"


@cache
def default_prompts() -> PromptSet:
    """The packaged templates and ``site_styles.toml``, loaded once; call at start-up to fail there, not per report."""
    return PromptSet()


def available_templates() -> tuple[str, ...]:
    return default_prompts().names()


def prompt_language(event: ReportEvent, default: str = "en") -> str:
    """``zh`` for Chinese findings (by tag or by script), else the primary language tag (``default``: none given)."""
    tag = (event.language or default).split("-")[0].lower()
    # The script wins over a default "en" tag, by the same detector the gateway tags events with.
    if tag == "zh" or detect_language(event.findings) == "zh":
        return "zh"
    return tag


def render_messages(request: InferenceRequest, prompts: PromptSet | None = None) -> tuple[list[Message], str]:
    """The chat messages for one request and its prompt version, by ``prompts`` (default: the packaged ones)."""
    return (prompts or default_prompts()).render(request)
