"""Screenshots of the dashboard for the README: ``python scripts/dashboard_screenshots.py [DIR]``.

Starts farebox in this process with an embedded Redis in a temporary directory, records the
demo of ``bench.dashboard.seed`` (3,000 events over 30 days), and saves the overview and project
acme's page at a laptop's width (1280 px) and a phone's (390 px) as PNG files in DIR (default
``docs/``). With ``--serve`` it keeps serving instead, and prints the URL and the token.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from bench.dashboard import TOKEN, seed
from proxy.http.app import create_app
from proxy.http.appkeys import SERVICES
from proxy.settings import Settings
from tests.dashboard.browser import ensure_chromium, resize, start_chromium
from tests.harness import LoopThread

SHOTS = (("overview", "#/"), ("project", "#/project/acme"))
WIDTHS = {"": (1280, 900), "-phone": (390, 844)}


def _shoot(url: str, out: Path) -> None:
    for suffix, (width, height) in WIDTHS.items():
        browser = start_chromium(width, height)
        try:
            browser.get(f"{url}/dashboard")
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "#signin button").click()
            for name, fragment in SHOTS:
                browser.get(f"{url}/dashboard{fragment}")
                WebDriverWait(browser, 10).until(ready.presence_of_element_located((By.CSS_SELECTOR, "h1")))
                WebDriverWait(browser, 10).until(lambda b: "Loading" not in b.find_element(By.ID, "view").text)
                time.sleep(0.3)
                full = browser.execute_script("return document.documentElement.scrollHeight")
                resize(browser, width, min(full, 3200))
                time.sleep(0.3)
                path = out / f"dashboard-{name}{suffix}.png"
                browser.save_screenshot(str(path))
                resize(browser, width, height)
                print(f"wrote {path}")
        finally:
            browser.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs"))
    parser.add_argument("--serve", action="store_true", help="keep serving the demo instead of taking screenshots")
    parser.add_argument("--events", type=int, default=3_000)
    args = parser.parse_args()
    threads = LoopThread()
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings(data_dir=data_dir, admin_token=TOKEN, admin_read_token="read-only-token",
                                  upstream="http://127.0.0.1:9/v1"))
        try:
            url = threads.serve(app, front=True)
            threads.run(seed(app[SERVICES].ledger, args.events), timeout=600)
            if args.serve:
                print(f"{url}/dashboard  token: {TOKEN}  (read-only: read-only-token)", flush=True)
                while True:
                    time.sleep(3600)
            problem = ensure_chromium()
            if problem:
                print(problem, file=sys.stderr)
                return 1
            _shoot(url, args.out)
        finally:
            threads.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
