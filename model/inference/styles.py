"""Per-site prompt styles: ``site_styles.toml`` → the style block and default language of each site's prompts.

Stage: infer (and training, export and evaluation, which render the same prompts). Input: the TOML file (default:
``site_styles.toml`` beside this module). Output: ``SiteStyles``; ``for_site(site)`` → ``SiteStyle`` (a site the file
does not name gets ``[default]``). Failure modes: a malformed file raises ``ValueError`` naming the file and the site,
at load (start-up), never per report. Format: the file's header, README "Site- and modality-aware prompting".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

DEFAULT_STYLES = Path(__file__).with_name("site_styles.toml")
MAX_STYLE_CHARS = 1000  # a style block is guidance, not a second report: keeps every prompt's length bounded
ANY_LANGUAGE = "*"
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")  # BCP-47 primary language subtag (RFC 5646 §2.2.1), as ReportEvent keeps it
_SITE = re.compile(r"^[^\x00-\x1f]{1,64}$")  # the store's site column is 64 characters; no control characters
_KEYS = frozenset({"language", "style"})


@dataclass(frozen=True)
class SiteStyle:
    """One site's prompt style: its default report language and its style text per prompt language."""

    site: str = ""  # the site key it came from; "" for [default]
    language: str = "en"
    styles: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def text(self, language: str) -> str:
        """The style block for a prompt in ``language`` ("" when the site has none for it)."""
        return self.styles.get(language, self.styles.get(ANY_LANGUAGE, ""))


def _style(raw: object, where: str) -> Mapping[str, str]:
    texts = {ANY_LANGUAGE: raw} if isinstance(raw, str) else raw
    if not isinstance(texts, dict):
        raise ValueError(f"{where}: style must be a string or a table of language = string")
    out: dict[str, str] = {}
    for language, text in texts.items():
        if language != ANY_LANGUAGE and not _LANGUAGE.match(language):
            raise ValueError(f"{where}: style language {language!r} is not a primary language tag (en, zh, …)")
        if not isinstance(text, str) or len(text.strip()) > MAX_STYLE_CHARS:
            raise ValueError(f"{where}: style {language!r} must be a string of at most {MAX_STYLE_CHARS} characters")
        out[language] = text.strip()
    return MappingProxyType(out)


def _site_style(site: str, raw: object, where: str, default: SiteStyle | None) -> SiteStyle:
    if not isinstance(raw, dict) or set(raw) - _KEYS:
        raise ValueError(f"{where}: a site takes {', '.join(sorted(_KEYS))} only")
    language = raw.get("language", default.language if default else "en")
    if not isinstance(language, str) or not _LANGUAGE.match(language):
        raise ValueError(f"{where}: language must be a primary language tag (en, zh, …)")
    styles = _style(raw["style"], where) if "style" in raw else (default.styles if default else _style("", where))
    return SiteStyle(site, language, styles)


@dataclass(frozen=True)
class SiteStyles:
    default: SiteStyle = SiteStyle()
    sites: Mapping[str, SiteStyle] = field(default_factory=lambda: MappingProxyType({}))
    path: Path | None = None

    def for_site(self, site: str) -> SiteStyle:
        """The site's style; ``[default]``'s for a site the file does not name (sites match exactly, as routes do)."""
        return self.sites.get(site, self.default)

    @classmethod
    def load(cls, path: Path | None = None) -> SiteStyles:
        path = path or DEFAULT_STYLES
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"site styles {path}: cannot be read ({type(exc).__name__})") from None
        if set(data) - {"default", "sites"} or not isinstance(data.get("sites", {}), dict):
            raise ValueError(f"site styles {path}: only [default] and [sites.<SITE>] tables")
        default = _site_style("", data.get("default", {}), f"site styles {path} [default]", None)
        sites = {}
        for site, raw in data.get("sites", {}).items():
            if not _SITE.match(site):
                raise ValueError(f"site styles {path}: site {site!r} must be 1-64 characters without control characters")
            sites[site] = _site_style(site, raw, f"site styles {path} [sites.{site}]", default)
        return cls(default, MappingProxyType(sites), path)
