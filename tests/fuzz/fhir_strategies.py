"""Hypothesis strategies for FHIR JSON: the golden DiagnosticReports and Bundles, mutated.

A document starts as one of tests/fixtures/fhir/*.json (synthetic and official examples) and gets a few mutations at
drawn paths: a value of another JSON type, a huge or unicode string, a deleted or unknown element, a deep nesting, a
presentedForm with a drawn charset and bytes, an XHTML narrative; sometimes it is cut or is not JSON at all.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"


def _bases() -> list[dict[str, Any]]:
    out = []
    for path in sorted([*FIXTURES.glob("*.json"), *(FIXTURES / "official").glob("*.json")]):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue  # the fixture that is not JSON on purpose
        if isinstance(doc, dict) and doc.get("resourceType") in ("DiagnosticReport", "Bundle"):
            out.append(doc)
    return out


BASES = _bases()
# Planted in drawn strings: an answer that quotes it quotes input. Built at run time: Hypothesis feeds string literals
# of the code under test into st.text(), which would make the bare marker a drawn code token too.
MARKER = "".join(("ZQX", "FUZZ", "MARK"))

JsonPath = tuple[str | int, ...]


def _strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=30),
        st.text(max_size=10).map(lambda t: f"{MARKER} {t}"),  # a space: never a code token (safe_token)
        st.sampled_from(["", " ", "final", "preliminary", "amended", "entered-in-error", "unknown", "Patient/1", "#findings",
                         "urn:uuid:6a1b7f0e-0000-4000-8000-000000000001", "2024-03-01", "2024-13-45T99:00:00Z",
                         "http://loinc.org", "59776-5", "19005-8", "18748-4", "ACSN", "CT", "RAD", "\u0000", "\ud7ff",
                         "74177", "\u00b9\u00b2\u00b3\u2074\u2075", "٧٤١٧٧", "http://www.ama-assn.org/go/cpt",
                         "检查所见：肺纹理清晰。", "FINDINGS: x\nIMPRESSION: y", "ADDENDUM: z", "<div>x</div>"]),
        st.tuples(st.text(min_size=1, max_size=8), st.integers(1, 50_000)).map(lambda t: t[0] * t[1]),  # huge
    )


def _keys() -> st.SearchStrategy[str]:
    """Element names (never the marker: a reason may name the element a client sent, not its value)."""
    return st.one_of(st.text(max_size=10), st.sampled_from(["id", "status", "resourceType", "_status", "extension",
                                                            "modifierExtension", "valueString", "div", "data", "url"]))


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=False), _strings())


def _json_values() -> st.SearchStrategy[Any]:
    return st.recursive(_scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_keys(), inner, max_size=3)), max_leaves=8)


def _deep(depth: int, kind: str) -> Any:
    """A nesting ``depth`` levels deep: lists, dicts, or FHIR extensions inside extensions."""
    value: Any = "leaf"
    for _ in range(depth):
        value = ([value] if kind == "list" else {"x": value} if kind == "dict"
                 else {"url": "http://example.org/x", "extension": [value if isinstance(value, dict) else
                                                                     {"url": "u", "valueString": "v"}]})
    return value


def _paths(doc: Any, prefix: JsonPath = ()) -> list[JsonPath]:
    out: list[JsonPath] = [prefix]
    if len(prefix) > 30:
        return out  # inside a drawn deep nesting: its top is path enough
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _parent(doc: Any, path: JsonPath) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def _presented_form() -> st.SearchStrategy[dict[str, Any]]:
    charsets = st.sampled_from(["", "; charset=utf-8", "; charset=UTF-8", "; charset=latin-1", "; charset=gb18030",
                                "; charset=utf-16", "; charset=\"utf-8\"", "; charset=bogus", "; charset=undefined",
                                "; charset=idna", "; charset=punycode", "; charset=rot13", "; charset=base64",
                                "; charset=unicode_escape", "; charset=utf-7", "; charset="])
    data = st.one_of(
        st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
        st.text(max_size=60).map(lambda t: base64.b64encode(t.encode("utf-8")).decode()),
        st.sampled_from(["not base64!", "====", "QQ", "", "\u00e9"]),
    )
    return st.fixed_dictionaries({
        "contentType": st.tuples(st.sampled_from(["text/plain", "text/plain", "text/plain", "text/html", "application/pdf",
                                                  "TEXT/PLAIN", ""]),
                                 charsets).map("".join),
        "data": data,
    }, optional={"title": st.sampled_from(["Report", "Addendum", "ADDENDUM 1", ""])})


def _narrative() -> st.SearchStrategy[dict[str, Any]]:
    inner = st.lists(st.one_of(
        st.sampled_from(["<p>", "</p>", "<br/>", "<b>FINDINGS:</b>", "IMPRESSION:", "<table><tr><td>", "&amp;", "&#160;",
                         "&bogus;", "<![CDATA[x]]>", "<!--", "<script>", "</div>", "<", ">", "&#xFFFFFF;", "&#0;"]),
        st.text(max_size=15)), max_size=10).map("".join)
    return st.fixed_dictionaries({
        "status": st.sampled_from(["generated", "additional", "extensions", "empty", "bogus"]),
        "div": inner.map(lambda t: f'<div xmlns="http://www.w3.org/1999/xhtml">{t}</div>'),
    })


@st.composite
def _mutate(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    path = draw(st.sampled_from(_paths(doc)))
    kind = draw(st.sampled_from(["replace", "replace", "delete", "add", "presentedForm", "narrative", "duplicate"]))
    target = _parent(doc, path) if path else None
    if kind == "presentedForm":
        doc.setdefault("presentedForm", [])
        if isinstance(doc["presentedForm"], list):
            doc["presentedForm"].insert(0, draw(_presented_form()))  # first: the one that is read
    elif kind == "narrative":
        doc["text"] = draw(_narrative())
    elif not path:
        doc[draw(_keys())] = draw(_json_values())
    elif kind == "replace":
        target[path[-1]] = draw(_json_values())
    elif kind == "delete":
        del target[path[-1]]
    elif kind == "duplicate" and isinstance(target, list):
        target.append(copy.deepcopy(target[path[-1]]))
    elif isinstance(target, dict):
        target[draw(_keys())] = draw(_json_values())
    return doc


@st.composite
def fhir_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 4))):
        doc = draw(_mutate(doc))
    if draw(st.integers(0, 9)) == 0:  # last: nothing walks or copies the nesting after this
        depth = draw(st.sampled_from([10, 60, 200, 1_200, 50_000]))
        doc[draw(st.sampled_from(["extension", "contained", "meta", "zz"]))] = _deep(depth, draw(
            st.sampled_from(["list", "dict", "extension"])))
    return doc


def _dumps(doc: Any) -> bytes:
    try:
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
    except RecursionError:  # deeper than the encoder goes: write the nesting out by hand
        return b'{"resourceType": "DiagnosticReport", "extension": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"


@st.composite
def fhir_bodies(draw: st.DrawFn) -> bytes:
    """Request bodies: mutated documents as JSON, sometimes cut, not UTF-8, not an object, or not JSON."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return draw(st.sampled_from([b"[]", b"null", b"1", b'"x"', b"{", b"[" * 100_000, b'{"a":' * 100_000,
                                     b"\xef\xbb\xbf{}", b'{"resourceType": "DiagnosticReport"}' + b"\x00",
                                     b'{"resourceType": "DiagnosticReport", "status": "final", "status": 1}']))
    body = _dumps(draw(fhir_documents()))
    if kind == 2:
        body = body[: draw(st.integers(0, len(body)))]
    elif kind == 3:
        body = body.decode("utf-8", errors="replace").encode("latin-1", errors="replace")
    return body
