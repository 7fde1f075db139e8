"""Which adapter drafts a request: the fallback chain site × route adapter → route adapter → base.

Stage: route (``check_site_adapters`` at load) and infer (``choose_adapter``, ``bind_prompt``). Input: the ``RouteSpec``
(``adapter``, the site's ``site_adapter``), the site, the registry's serving adapters and their trained prompts. Output:
``AdapterChoice`` (adapter, source site | route | base, reason in ids); the request prompted as the adapter was trained.
Failure modes: malformed ``site_adapters`` → ``ValueError`` at load; the chain never fails (the base is always served).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.events import InferenceRequest, RouteSpec

BASE_ADAPTER = "base"  # the routing table's name for the base model, as the worker serves it (registry default)
SITE_MARK = "@"  # registry route key of a site adapter: <route>@<site>
# Served model names go into vLLM's ``--lora-modules name=path`` and are shown as ``name@version``: no "=", no "@".
# 128: the store's adapter_name column.
_ADAPTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class AdapterChoice:
    adapter: str
    source: str  # "site" | "route" | "base"
    reason: str  # for the log line: adapter names and codes only


def site_key(route: str, site: str) -> str:
    """The adapter registry's route key of a site × route adapter (``ct_chest@SITE_B``): one serving adapter each."""
    return f"{route}{SITE_MARK}{site}"


def check_site_adapters(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    """A row's ``site_adapters = { SITE = "adapter", … }`` as sorted (site, adapter) pairs."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(f"routing table {where}: site_adapters must be a table of site = adapter name")
    for site, adapter in raw.items():
        if not site.strip() or len(site) > 64:
            raise ValueError(f"routing table {where}: site_adapters site {site!r} must be 1-64 characters")
        if not isinstance(adapter, str) or not _ADAPTER.match(adapter) or adapter == BASE_ADAPTER:
            raise ValueError(f"routing table {where}: site_adapters[{site!r}] must be an adapter name of letters, "
                             "digits, '_', '.', '-' (no '@' or '='; not 'base': a site without an adapter is left out)")
    return tuple(sorted(raw.items()))


def choose_adapter(route: RouteSpec, site: str, serving: Mapping[str, str]) -> AdapterChoice:
    """The first link of the chain that can draft: the site's adapter when it is registered and serving (the registry
    serves ``<route>@<site>``, or the table's ``site_adapter`` is a serving adapter), else the route's (the registry's
    serving adapter for the route, else the table's), else the base.

    ``serving`` empty means no registry is known: the table's route adapter is trusted as named (as the worker was
    told to load it), and site adapters, which must be registered, are not used."""
    names = frozenset(serving.values())
    skipped = ""
    if site:
        if promoted := serving.get(site_key(route.name, site)):
            return AdapterChoice(promoted, "site", f"registry serves {site_key(route.name, site)}")
        if route.site_adapter and route.site_adapter in names:
            return AdapterChoice(route.site_adapter, "site", "site adapter serving")
        if route.site_adapter:
            skipped = f"site adapter {route.site_adapter} not serving; "
    if promoted := serving.get(route.name):
        return AdapterChoice(promoted, "route", f"{skipped}registry serves {route.name}")
    if route.adapter == BASE_ADAPTER:
        return AdapterChoice(BASE_ADAPTER, "base", f"{skipped}the route drafts with the base")
    if not serving or route.adapter in names:
        return AdapterChoice(route.adapter, "route", f"{skipped}route adapter" + ("" if serving else " (no registry)"))
    return AdapterChoice(BASE_ADAPTER, "base", f"{skipped}route adapter {route.adapter} not serving")


def bind_prompt(request: InferenceRequest, adapter: str, prompts: Mapping[str, str]) -> InferenceRequest:
    """``request`` as ``adapter`` drafts it: prompted with the template the adapter was trained with when the registry
    records one (``prompts``: ``Registry.bound_prompts()``) and the route names another, else unchanged.

    An adapter chosen by prompt selection (``retrain --prompt-candidates``) may have learnt a template the routing
    table does not name: served with the table's, it would see prompts unlike any it was trained on."""
    bound = prompts.get(adapter, "")
    if not bound or bound == request.route.prompt_template:
        return request
    return request.model_copy(update={"route": request.route.model_copy(update={"prompt_template": bound})})
