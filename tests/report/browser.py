"""Open a page in a real headless Chromium (Debian's package), offline, and look at it.

playwright drives the installed binary through the DevTools protocol; no
browser is downloaded. ``.ci/run`` installs Debian's ``chromium`` when it is
missing; tests skip, saying why, only where it cannot be found.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Rendered", "Unavailable", "chromium", "render"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Unavailable(RuntimeError):
    """No Chromium to run here."""


def chromium() -> str:
    """Path of an installed Chromium or Chrome (``BROWSER_PATH`` first)."""
    env = os.environ.get("BROWSER_PATH")
    if env and os.access(env, os.X_OK):
        return env
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise Unavailable("Chromium is not installed: no chromium on PATH (.ci/run installs "
                      "Debian's chromium package)")


@dataclass
class Rendered:
    """What the browser saw: console errors, requests that left the file, DOM facts."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


FACTS_JS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return {
    plots: plots.map(p => ({id: p.id, svg: p.querySelectorAll('.main-svg').length,
                            traces: (p.data || []).length,
                            types: [...new Set((p.data || []).map(t => t.type || 'scatter'))],
                            menus: ((p.layout || {}).updatemenus || []).map(
                                m => m.buttons.length)})),
    sankey_nodes: document.querySelectorAll('#fig-sankey .sankey .sankey-node').length,
    sankey_links: document.querySelectorAll('#fig-sankey .sankey .sankey-link').length,
    retention_paths: document.querySelectorAll('#fig-retention .scatterlayer .trace').length,
    kpi_rows: document.querySelectorAll('#kpi-table tbody tr').length,
  };
}"""


def render(page_path: Path, screenshot: Path, timeout_s: float = 60.0) -> Rendered:
    """Load ``page_path`` with every network request refused; wait for every plot.

    Args:
        page_path: the HTML file.
        screenshot: where to write a full-page PNG.
        timeout_s: how long the page may take to draw its plots.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium()
    seen = Rendered()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True,
                                     args=["--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def route(r: Any) -> None:
                if r.request.url.startswith(("file:", "data:", "blob:")):
                    r.continue_()
                else:
                    seen.requests.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error"
                    else None)
            page.on("pageerror", lambda e: seen.errors.append(f"page error: {e}"))
            page.goto(page_path.resolve().as_uri(), wait_until="load",
                      timeout=timeout_s * 1000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.js-plotly-plot')].length > 0 && "
                "[...document.querySelectorAll('.js-plotly-plot')].every("
                "p => p.querySelector('.main-svg'))", timeout=timeout_s * 1000)
            seen.facts = page.evaluate(FACTS_JS)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen
