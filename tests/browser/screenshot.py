"""A PNG of the built-in dashboard over a given store, taken in the real headless Chromium (tests/harness/webdriver.py).

``.venv/bin/python -m tests.browser.screenshot --store sqlite:///.data/demo/demo.db --out docs/dashboard.png``
serves the dashboard over the store on a loopback port (a one-off dashboard-read token, in memory only: no report
text on the picture), loads it, waits for the charts and saves the page. ``--registry`` adds the promotions.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from pathlib import Path

from ops.drift.status import OpsSources
from ops.store import Store
from tests.browser.served import serving
from tests.harness.webdriver import Browser


def take(store_url: str, out: Path, *, registry: Path | None = None, weeks: int = 16, width: int = 1400,
         min_samples: int = 20, route: str = "") -> Path:
    token = secrets.token_urlsafe(24)
    tokens = json.dumps([{"name": "screenshot", "scopes": ["dashboard-read"], "token": token}])
    store = Store(store_url)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with serving(store, tokens, min_samples=min_samples, sources=OpsSources(registry_path=registry)) as base, \
                tempfile.TemporaryDirectory(prefix="ig-screenshot-") as profile:
            browser = Browser(Path(profile))
            try:
                browser.get(f"{base}/dashboard")
                browser.type("#token", token)
                browser.script(f"document.getElementById('f-weeks').value = '{int(weeks)}'")
                browser.click("#use-token")
                if browser.wait_for("return document.body.dataset.ready", timeout=120) != "1":
                    raise RuntimeError("the dashboard did not load (see its status line)")
                if route:  # the route filter, as a user picks it: the weekly charts of that route only
                    browser.script("const s = document.querySelector('#filters select[data-filter=route]');"
                                   f"s.value = {json.dumps(route)}; document.body.dataset.picked = '';"
                                   "loadWeekly().then(() => { document.body.dataset.picked = '1'; });")
                    if browser.wait_for("return document.body.dataset.picked", timeout=60) != "1":
                        raise RuntimeError(f"the route filter {route!r} did not apply")
                height = int(browser.script("return document.documentElement.scrollHeight"))
                browser.resize(width, min(height + 40, 8000))
                browser.screenshot(out)
            finally:
                browser.close()
    finally:
        store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot of the dashboard over a store (headless Chromium).")
    parser.add_argument("--store", required=True, help="SQLAlchemy URL, e.g. sqlite:///.data/demo/demo.db")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"), help="the PNG to write")
    parser.add_argument("--registry", type=Path, help="the adapter registry (its audit.jsonl: promotion markers)")
    parser.add_argument("--weeks", type=int, default=16, choices=(8, 12, 16, 26, 52), help="weeks on the charts")
    parser.add_argument("--min-samples", type=int, default=20, help="as the drift settings (hollow points below)")
    parser.add_argument("--route", default="", help="pick this route in the route filter (default: every route)")
    args = parser.parse_args(argv)
    print(take(args.store, args.out, registry=args.registry, weeks=args.weeks, min_samples=args.min_samples, route=args.route))
    return 0


if __name__ == "__main__":
    sys.exit(main())
