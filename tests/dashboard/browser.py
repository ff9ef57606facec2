"""Debian's chromium, headless, driven through chromedriver with selenium.

``ensure_chromium`` installs the ``chromium`` and ``chromium-driver`` packages with apt-get when
they are missing and this process may (root), as on a fresh CI machine, and says why not when
they cannot be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["ensure_chromium", "start_chromium", "resize"]

PACKAGES = ("chromium", "chromium-driver")


def _paths() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


def ensure_chromium() -> str | None:
    """Install Debian's chromium and its driver if they are missing; None when they are there,
    else why they could not be had."""
    if all(_paths()):
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "chromium and chromedriver are missing, and apt-get cannot be run here to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr[-500:]}"
    return None if all(_paths()) else "apt-get installed chromium, yet chromium or chromedriver is not on PATH"


def start_chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless chromium window of ``width`` × ``height`` CSS pixels, with no network access
    beyond what the page's own origin serves (none is needed)."""
    chromium, driver = _paths()
    assert chromium and driver, "call ensure_chromium() first"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1", "--hide-scrollbars",
                 "--no-first-run", "--disable-extensions", "--proxy-server=127.0.0.1:9",
                 "--proxy-bypass-list=127.0.0.1;localhost"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})   # console errors, CSP refusals included
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    resize(browser, width, height)
    return browser


def resize(browser: webdriver.Chrome, width: int, height: int) -> None:
    """Make the page's viewport ``width`` × ``height`` CSS pixels, as a phone's when narrow (a
    headless window is never narrower than 500 px, so the size is emulated)."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
