"""A FHIR server on loopback for the end-to-end tests, standing in for the EHR: it answers the
search the post stage makes (``GET DiagnosticReport?identifier=…``) and stores transaction Bundles,
answering with a transaction-response (FHIR R4 bundle.html#transaction-response)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class FhirServer:
    def __init__(self) -> None:
        self.transactions: list[dict[str, Any]] = []
        self.signed_accessions: set[str] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                return

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                accession = (query.get("identifier") or [""])[0].split("|")[-1]
                total = 1 if accession in owner.signed_accessions else 0
                self._answer(200, {"resourceType": "Bundle", "type": "searchset", "total": total})

            def do_POST(self) -> None:
                bundle = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                owner.transactions.append(bundle)
                n = len(owner.transactions)
                self._answer(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": [
                    {"response": {"status": "201 Created", "location": f"{e['resource']['resourceType']}/{n}-{i}/_history/1"}}
                    for i, e in enumerate(bundle.get("entry", []))]})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/fhir"

    def transactions_for(self, accession: str) -> list[dict[str, Any]]:
        return [b for b in self.transactions if accession in json.dumps(b)]

    def __enter__(self) -> FhirServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
