"""Retake docs/img/docs-site.png (the site's landing page) and docs/img/docs-api.png (an API page).

Usage: ``bash scripts/docs.sh && .venv/bin/python docs/site_screenshot.py`` (needs Debian's
chromium at /usr/bin/chromium). It serves site/ on a free loopback port and saves both pages
as headless chromium shows them.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
SHOTS = {"docs-site.png": "index.html", "docs-api.png": "api/pbnb.html"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--headless=new", "--no-first-run", "--disable-sync"]


def main() -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(REPO / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            for name, path in SHOTS.items():
                page.goto(f"http://127.0.0.1:{server.server_port}/{path}")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(REPO / "docs" / "img" / name))
                print(f"wrote docs/img/{name}")
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
