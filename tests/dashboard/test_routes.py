"""The dashboard's page and assets over HTTP: served from the package with a Content-Security-Policy,
revalidated by ETag, no token needed for them (the data is the admin API's); and shipped by a
non-editable install (the package data in pyproject.toml)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import httpx
import pytest

from proxy.dashboard.routes import ASSETS, SECURITY_HEADERS

ROOT = Path(__file__).resolve().parent.parent.parent
ASSET_DIR = ROOT / "proxy" / "dashboard" / "assets"


@pytest.fixture
def stack(make_stack):
    return make_stack(admin_token="admin-secret")


@pytest.mark.parametrize("path,content_type", [
    ("/dashboard", "text/html"), ("/dashboard/", "text/html"), ("/dashboard/assets/app.js", "text/javascript"),
    ("/dashboard/assets/project.js", "text/javascript"), ("/dashboard/assets/charts.js", "text/javascript"),
    ("/dashboard/assets/style.css", "text/css"), ("/dashboard/assets/icon.svg", "image/svg+xml"),
])
def test_page_and_assets_are_served_with_a_content_security_policy(stack, path, content_type):
    answer = httpx.get(f"{stack.url}{path}")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == f"{content_type}; charset=utf-8"
    assert answer.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["X-Frame-Options"] == "DENY"
    name = "index.html" if path.rstrip("/") == "/dashboard" else path.rsplit("/", 1)[1]
    assert answer.content == (ASSET_DIR / name).read_bytes()
    again = httpx.get(f"{stack.url}{path}", headers={"If-None-Match": answer.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_page_refers_only_to_its_own_assets(stack):
    page = httpx.get(f"{stack.url}/dashboard").text
    assert "http://" not in page and "https://" not in page and "<script>" not in page and "style=" not in page
    for name in ("app.js", "project.js", "charts.js", "style.css"):
        assert f"/dashboard/assets/{name}" in page


@pytest.mark.parametrize("path", ["/dashboard/assets/nothing.js", "/dashboard/assets/index.html",
                                  "/dashboard/assets/../routes.py", "/dashboard/assets/"])
def test_an_unknown_asset_is_404(stack, path):
    answer = httpx.get(f"{stack.url}{path}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_endpoint"


def test_every_asset_is_listed_and_shipped_as_package_data():
    assert sorted(p.name for p in ASSET_DIR.iterdir()) == sorted(ASSETS)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["proxy.dashboard"]
    for name in ASSETS:
        assert any(fnmatch.fnmatch(f"assets/{name}", pattern) for pattern in patterns), name


def test_scripts_write_no_inline_style_and_no_html_strings():
    """What the policy would refuse (inline style attributes) and what could inject markup."""
    for name in ("app.js", "project.js", "charts.js"):
        source = (ASSET_DIR / name).read_text()
        assert "innerHTML" not in source and "insertAdjacentHTML" not in source and "eval(" not in source
        assert 'setAttribute("style"' not in source and "style:" not in source
