"""A FHIR server on loopback standing in for the EHR: it keeps DiagnosticReports and Provenances in memory.

It answers what the post stage does: the signed-report search (``GET DiagnosticReport?identifier=…&status=…``, from
``signed_accessions``), a search by draft identifier, reads with an ETag, updates with If-Match (412 when stale),
and transaction Bundles of conditional creates and versioned updates, answered with a transaction-response (FHIR R4
bundle.html#transaction-response, http.html#concurrency). ``unavailable`` answers 503; ``close``/``reopen`` take it
off the network and back (connections refused meanwhile).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

DRAFT_SYSTEM = "urn:impression-gateway:draft"


class FhirServer:
    def __init__(self) -> None:
        self.transactions: list[dict[str, Any]] = []
        self.signed_accessions: set[str] = set()
        self.reports: dict[str, dict[str, Any]] = {}  # id → the current version
        self.provenances: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request answered
        self.unavailable = False
        self._lock = threading.Lock()
        self._port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what the handler does, under the lock ----------------------------------------------------------------------
    def _find(self, identifier: dict[str, Any]) -> dict[str, Any] | None:
        return next((r for r in self.reports.values() if identifier in r.get("identifier", [])), None)

    def _store(self, resource: dict[str, Any], report_id: str, version: int) -> dict[str, Any]:
        stored = {**resource, "id": report_id, "meta": {**resource.get("meta", {}), "versionId": str(version)}}
        self.reports[report_id] = stored
        return stored

    def _entry(self, entry: dict[str, Any], created: dict[str, str]) -> tuple[int, dict[str, Any]]:
        resource, request = entry["resource"], entry["request"]
        kind = resource["resourceType"]
        if kind == "Provenance":
            targets = [created.get(t["reference"], t["reference"]) for t in resource.get("target", [])]
            self.provenances.append({**resource, "target": [{"reference": t} for t in targets]})
            return 201, {"status": "201 Created", "location": f"Provenance/{len(self.provenances)}/_history/1"}
        if request["method"] == "POST":
            condition = parse_qs(request.get("ifNoneExist", "")).get("identifier", [""])[0]
            system, _, value = condition.partition("|")
            existing = self._find({"system": system, "value": value}) if condition else None
            if existing is not None:
                created[entry["fullUrl"]] = f"DiagnosticReport/{existing['id']}"
                return 200, {"status": "200 OK", "location": f"DiagnosticReport/{existing['id']}/_history/"
                                                             f"{existing['meta']['versionId']}"}
            report_id = f"dr-{len(self.reports) + 1}"
            self._store(resource, report_id, 1)
            created[entry["fullUrl"]] = f"DiagnosticReport/{report_id}"
            return 201, {"status": "201 Created", "location": f"DiagnosticReport/{report_id}/_history/1"}
        return self._update(request["url"].rsplit("/", 1)[-1], resource, request.get("ifMatch", ""))

    def _update(self, report_id: str, resource: dict[str, Any], if_match: str) -> tuple[int, dict[str, Any]]:
        held = self.reports.get(report_id)
        if held is None:
            return 404, {"status": "404 Not Found"}
        if if_match and if_match != f'W/"{held["meta"]["versionId"]}"':
            return 412, {"status": "412 Precondition Failed"}
        stored = self._store(resource, report_id, int(held["meta"]["versionId"]) + 1)
        return 200, {"status": "200 OK", "location": f"DiagnosticReport/{report_id}/_history/"
                                                     f"{stored['meta']['versionId']}"}

    def _transaction(self, bundle: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        snapshot = {k: dict(v) for k, v in self.reports.items()}
        created: dict[str, str] = {}
        responses = []
        for entry in bundle.get("entry", []):
            status, response = self._entry(entry, created)
            if status >= 400:  # a transaction succeeds or fails as a whole (R4 http.html#transaction)
                self.reports = snapshot
                return status, {"resourceType": "OperationOutcome", "issue": [{"severity": "error",
                                                                               "code": "conflict"}]}
            responses.append({"response": response})
        self.transactions.append(bundle)
        return 200, {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}

    def _search(self, query: dict[str, list[str]]) -> dict[str, Any]:
        identifiers = (query.get("identifier") or [""])[0].split(",")
        drafts = [i.partition("|")[2] for i in identifiers if i.startswith(f"{DRAFT_SYSTEM}|")]
        if not drafts:  # the post stage's signed-report search, by accession
            accession = identifiers[0].split("|")[-1]
            return {"resourceType": "Bundle", "type": "searchset",
                    "total": 1 if accession in self.signed_accessions else 0}
        found = [r for r in self.reports.values()
                 if any({"system": DRAFT_SYSTEM, "value": d} in r.get("identifier", []) for d in drafts)]
        return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                "entry": [{"fullUrl": f"{self.base_url}/DiagnosticReport/{r['id']}", "resource": r} for r in found]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                return

            def _answer(self, status: int, body: dict[str, Any], etag: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                if etag:
                    self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")  # type: ignore[no-any-return]

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                body = self._body() if method in ("POST", "PUT") else {}
                with owner._lock:
                    owner.requests.append((method, url.path))
                    if owner.unavailable:
                        self._answer(503, {"resourceType": "OperationOutcome", "issue": []})
                        return
                    tail = url.path.split("/DiagnosticReport/", 1)[1] if "/DiagnosticReport/" in url.path else ""
                    if method == "GET" and tail:
                        report = owner.reports.get(tail.split("/")[0])
                        if report is None:
                            self._answer(404, {"resourceType": "OperationOutcome", "issue": []})
                        else:
                            self._answer(200, report, f'W/"{report["meta"]["versionId"]}"')
                    elif method == "GET":
                        self._answer(200, owner._search(parse_qs(url.query)))
                    elif method == "PUT":
                        status, _ = owner._update(tail, body, self.headers.get("If-Match", ""))
                        self._answer(status, owner.reports.get(tail, {}) if status == 200 else
                                     {"resourceType": "OperationOutcome", "issue": []})
                    else:
                        self._answer(*owner._transaction(body))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

        return Handler

    # -- running it -------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/fhir"

    def transactions_for(self, accession: str) -> list[dict[str, Any]]:
        return [b for b in self.transactions if accession in json.dumps(b)]

    def reports_for(self, accession: str) -> list[dict[str, Any]]:
        """The DiagnosticReports held for an accession (one per study, whatever was posted)."""
        with self._lock:
            return [r for r in self.reports.values() if any(i.get("value") == accession for i in r["identifier"])]

    def reopen(self) -> FhirServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FhirServer:
        return self.reopen()

    def __exit__(self, *exc: object) -> None:
        self.close()
