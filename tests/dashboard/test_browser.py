"""The dashboard in a real browser (Debian's chromium, headless, installed when missing): sign in,
read a project's numbers off the page and compare them with the admin API, change budgets and
keys through the page and see the API change, and the errors a person sees."""

from __future__ import annotations

import httpx
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pricing.money import nano_to_usd, usd_to_nano
from tests.dashboard.browser import ensure_chromium, start_chromium

pytestmark = pytest.mark.once

ADMIN_TOKEN, READ_TOKEN = "admin-secret-token", "read-secret-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TRAFFIC = [("planner", "run-1", "gpt-4o"), ("planner", "run-1", "gpt-4o-mini"), ("coder", "run-2", "gpt-4o-mini"),
           ("coder", "run-2", "gpt-4o-mini"), ("reviewer", "run-3", "gpt-4o")]


@pytest.fixture(scope="module")
def browser():
    problem = ensure_chromium()
    if problem:
        pytest.skip(problem)
    driver = start_chromium(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()


def send(stack, agent: str, session: str, model: str) -> str:
    response = httpx.post(f"{stack.base_url}/chat/completions",
                          headers={"X-Project-Id": "acme", "X-Agent-Id": agent, "X-Session-Id": session},
                          json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40})
    assert response.status_code == 200, response.text
    return response.headers["X-Request-Id"]


@pytest.fixture
def stack(make_stack):
    # Alerts go to a webhook that refuses them (the fake upstream has no such path): each
    # delivery is kept, failed, and the page lists it.
    s = make_stack(admin_token=ADMIN_TOKEN, admin_read_token=READ_TOKEN, alert_webhook_urls=["http://127.0.0.1:9/hook"],
                   alert_max_attempts=1)
    for agent, session, model in TRAFFIC:
        send(s, agent, session, model)
    record = httpx.post(f"{s.url}/v1/usage-records", headers={"X-Project-Id": "acme", "X-Agent-Id": "coder"},
                        json={"resource": "gpu", "quantity": "0.0001", "execution_id": "run-2"})
    assert record.status_code == 201, record.text
    s.run(s.services.settled())
    spent = usd_to_nano(api(s, "/admin/usage", scope="project", id="acme", period="month")["cost_usd"])
    # A quarter of the limit one nano-dollar above what is spent: the next request crosses 25 %.
    response = httpx.put(f"{s.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": nano_to_usd(4 * (spent + 1)), "period": "month",
                               "alert_thresholds": [0.001, 0.25, 1.0]})
    assert response.status_code == 200
    send(s, "planner", "run-1", "gpt-4o")   # crosses the 25 % threshold: an alert
    s.run(s.services.settled())
    s.run(s.services.alerts.drain())
    return s


def api(stack, path: str, **params) -> dict:
    response = httpx.get(f"{stack.url}{path}", headers=ADMIN, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def wait(driver, condition, timeout: float = 10):
    """What ``condition`` gives once it gives something true; the page re-rendering meanwhile
    (an element gone stale, not there yet) counts as not yet."""
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
                         ).until(lambda d: condition(d))


def text_of(driver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def sign_in(driver, stack, token: str, fragment: str = "") -> None:
    driver.get(f"{stack.url}/dashboard{fragment}")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{stack.url}/dashboard{fragment}")
    field = wait(driver, lambda d: d.find_element(By.ID, "token"))
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()


def open_project(driver, stack, token: str = ADMIN_TOKEN) -> None:
    sign_in(driver, stack, token)
    link = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#projects tr[data-project=acme] a"))
    link.click()
    wait(driver, lambda d: d.find_elements(By.ID, "budgets"))


def test_the_page_shows_the_numbers_the_admin_api_gives(browser, stack):
    sign_in(browser, stack, ADMIN_TOKEN)
    overview = api(stack, "/admin/projects")
    row = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#projects tr[data-project=acme]"))
    assert row.find_element(By.CSS_SELECTOR, "[data-field=month_usd]").text == "$" + overview["projects"][0]["month_usd"]
    assert text_of(browser, ".cards [data-field=today_usd]") == "$" + overview["today_usd"]
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")    # the spend chart is drawn
    row.find_element(By.TAG_NAME, "a").click()
    wait(browser, lambda d: d.find_elements(By.ID, "budgets"))

    usage = api(stack, "/admin/usage", scope="project", id="acme", period="month")
    assert text_of(browser, ".cards [data-field=cost_usd]") == "$" + usage["cost_usd"]
    assert text_of(browser, ".cards [data-field=requests]") == str(usage["requests"]) == "7"
    assert text_of(browser, "#by-resource [data-field=llm_cost_usd]") == "$" + usage["llm_cost_usd"]
    assert text_of(browser, "#by-resource [data-field=compute_cost_usd]") == "$" + usage["compute_cost_usd"] != "$0.00"
    gpu = browser.find_element(By.CSS_SELECTOR, "#by-resource-table tr[data-resource=gpu]")
    assert gpu.find_element(By.CSS_SELECTOR, "[data-field=cost_usd]").text == "$" + usage["by_resource"]["gpu"]["cost_usd"]
    assert gpu.find_element(By.CSS_SELECTOR, "[data-field=records]").text == "1"
    for model, part in usage["by_model"].items():
        cells = browser.find_element(By.CSS_SELECTOR, f"#by-model-table tr[data-model='{model}']")
        assert cells.find_element(By.CSS_SELECTOR, "[data-field=cost_usd]").text == "$" + part["cost_usd"]
        assert cells.find_element(By.CSS_SELECTOR, "[data-field=requests]").text == str(part["requests"])
    for agent, part in usage["by_agent"].items():
        cells = browser.find_element(By.CSS_SELECTOR, f"#by-agent-table tr[data-agent='{agent}']")
        assert cells.find_element(By.CSS_SELECTOR, "[data-field=cost_usd]").text == "$" + part["cost_usd"]
    sessions = browser.find_elements(By.CSS_SELECTOR, "#sessions-table tbody tr")
    assert [s.get_attribute("data-session") for s in sessions] == [s["session"] for s in usage["top_sessions"]]

    budget = api(stack, "/admin/budgets/project/acme")
    gauge = browser.find_element(By.CSS_SELECTOR, "[data-budget='project:acme']")
    for field in ("limit_usd", "spent_usd", "reserved_usd", "remaining_usd"):
        assert gauge.find_element(By.CSS_SELECTOR, f"[data-field={field}]").text == "$" + budget[field]
    assert gauge.find_element(By.CSS_SELECTOR, "[data-field=percent]").text == str(budget["percent"])
    assert len(gauge.find_elements(By.CSS_SELECTOR, "svg line.threshold")) == 2   # a mark per threshold below 100 %
    assert len(gauge.find_elements(By.CSS_SELECTOR, "svg line.limit")) == 1
    forecast = api(stack, "/admin/forecast", scope="project", id="acme", period="month")
    runs_out = forecast["forecasts"]["trend"]["runs_out_at"]
    shown = gauge.find_element(By.CSS_SELECTOR, "[data-field=runs_out]").text
    assert (runs_out[:10] in shown) if runs_out else ("not" in shown)

    newest = api(stack, "/admin/events/recent", project="acme")["events"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#events-table tbody tr")
    assert [r.get_attribute("data-event") for r in rows] == [e["request_id"] for e in newest]
    alerts = browser.find_elements(By.CSS_SELECTOR, "#alerts-table tbody tr")
    assert [a.text.split()[-1] for a in alerts] == [f"{a['percent']}%" for a in api(stack, "/admin/alerts",
                                                                                      project="acme")["alerts"]]
    deliveries = api(stack, "/admin/alerts", project="acme")["deliveries"]
    shown = browser.find_elements(By.CSS_SELECTOR, "#deliveries-table tbody tr")
    assert len(shown) == len(deliveries) == 1
    assert "webhook" in shown[0].text and "failed" in shown[0].text and deliveries[0]["outcome"] == "failed"
    assert browser.get_cookies() == []
    assert ADMIN_TOKEN not in browser.current_url
    assert browser.execute_script("return sessionStorage.getItem('farebox.admin_token')") == ADMIN_TOKEN
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == []


def test_recent_events_refresh_live(browser, stack):
    open_project(browser, stack)
    request_id = send(stack, "coder", "run-9", "gpt-4o-mini")
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"#events-table tr[data-event='{request_id}']"),
               timeout=15)
    assert row and browser.find_elements(By.CSS_SELECTOR, "#events-table tbody tr")[0].get_attribute(
        "data-event") == request_id


def test_budgets_change_through_the_page(browser, stack):
    open_project(browser, stack)
    gauge = browser.find_element(By.CSS_SELECTOR, "[data-budget='project:acme']")
    gauge.find_element(By.XPATH, ".//button[text()='Edit']").click()
    limit = browser.find_element(By.ID, "budget-limit")
    limit.clear()
    limit.send_keys("2.5")
    browser.find_element(By.CSS_SELECTOR, "#budget-form button[type=submit]").click()
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-budget='project:acme'] [data-field=limit_usd]")
         .text == "$2.50")
    assert api(stack, "/admin/budgets/project/acme")["limit_usd"] == "2.50"

    browser.find_element(By.CSS_SELECTOR, "#budget-scope option[value=agent]").click()
    browser.find_element(By.ID, "budget-id").send_keys("planner")
    browser.find_element(By.ID, "budget-limit").send_keys("0.75")
    browser.find_element(By.CSS_SELECTOR, "#budget-period option[value=day]").click()
    browser.find_element(By.CSS_SELECTOR, "#budget-mode option[value=soft]").click()
    browser.find_element(By.CSS_SELECTOR, "#budget-form button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-budget='agent:acme/planner']"))
    made = api(stack, "/admin/budgets/agent/acme/planner")
    assert (made["limit_usd"], made["period"], made["mode"]) == ("0.75", "day", "soft")

    browser.find_element(By.ID, "budget-limit").send_keys("ten")
    browser.find_element(By.CSS_SELECTOR, "#budget-form button[type=submit]").click()
    error = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#budget-form .error"))
    assert "Invalid limit_usd 'ten'" in error.text

    delete = browser.find_element(By.XPATH, "//*[@data-budget='agent:acme/planner']//button[text()='Delete']")
    delete.click()
    assert delete.text == "Confirm delete"
    delete.click()
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-budget='agent:acme/planner']"))
    assert httpx.get(f"{stack.url}/admin/budgets/agent/acme/planner", headers=ADMIN).status_code == 404


def test_keys_are_created_with_the_secret_shown_once_and_revoked(browser, stack):
    open_project(browser, stack)
    browser.find_element(By.ID, "key-name").send_keys("ci runners")
    browser.find_element(By.ID, "key-rpm").send_keys("60")
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    secret = wait(browser, lambda d: d.find_element(By.ID, "key-secret")).text
    assert secret.startswith("fbk_")
    keys = api(stack, "/admin/keys", project="acme")["keys"]
    assert [(k["name"], k["rpm"], k["state"]) for k in keys] == [("ci runners", 60, "active")]
    assert httpx.get(f"{stack.url}/admin/keys/{keys[0]['id']}", headers=ADMIN).text.count("fbk_") == 0
    browser.find_element(By.CSS_SELECTOR, f"#keys-table tr[data-key='{keys[0]['id']}'] button").click()
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"#keys-table tr[data-key='{keys[0]['id']}']")
         .text.endswith("revoked"))
    assert api(stack, f"/admin/keys/{keys[0]['id']}")["state"] == "revoked"
    browser.refresh()
    wait(browser, lambda d: d.find_elements(By.ID, "keys-table"))
    assert secret not in browser.page_source


def test_a_wrong_token_shows_an_error_not_a_blank_page(browser, stack):
    sign_in(browser, stack, "not-the-token")
    error = wait(browser, lambda d: d.find_element(By.ID, "signin-error"))
    wait(browser, lambda d: error.is_displayed() and error.text)
    assert error.text == "That token was refused: Missing or wrong admin token: send Authorization: Bearer <admin token>."
    assert browser.find_element(By.ID, "token").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('farebox.admin_token')") is None


def test_the_read_only_token_views_but_cannot_change(browser, stack):
    open_project(browser, stack, READ_TOKEN)
    assert text_of(browser, "#who") == "Signed in: read-only"
    assert not browser.find_elements(By.ID, "budget-form") and not browser.find_elements(By.ID, "key-form")
    assert not browser.find_elements(By.XPATH, "//button[text()='Edit' or text()='Delete' or text()='Revoke']")
    assert "Read-only token: budgets can be viewed, not changed." in text_of(browser, "#budgets")
    assert text_of(browser, ".cards [data-field=requests]") == "7"


def test_a_signed_out_or_expired_session_goes_back_to_the_form(browser, stack):
    open_project(browser, stack)
    browser.find_element(By.ID, "signout").click()
    wait(browser, lambda d: d.find_element(By.ID, "token").is_displayed())
    assert browser.execute_script("return sessionStorage.getItem('farebox.admin_token')") is None
    browser.execute_script("sessionStorage.setItem('farebox.admin_token', 'stale-token')")
    browser.get(f"{stack.url}/dashboard#/project/acme")
    browser.refresh()
    error = wait(browser, lambda d: d.find_element(By.ID, "signin-error"))
    wait(browser, lambda d: error.is_displayed())
    assert error.text.startswith("That token was refused")


def test_pages_fit_a_phone_width_and_hourly_points_cover_the_hours_kept(stack):
    phone = start_chromium(390, 844)
    try:
        open_project(phone, stack)
        assert phone.execute_script("return document.documentElement.scrollWidth") <= 390
        phone.find_element(By.CSS_SELECTOR, "#range-granularity option[value=hour]").click()
        title = wait(phone, lambda d: d.find_element(By.ID, "series-title").text.startswith("Spend per hour")
                     and d.find_element(By.ID, "series-title").text)
        bars = phone.find_elements(By.CSS_SELECTOR, "#series svg.chart > g")
        assert len(bars) <= 48 and ("last 48 hours" in title or len(bars) <= 24 * 31)
        assert phone.execute_script("return document.documentElement.scrollWidth") <= 390
        phone.find_element(By.LINK_TEXT, "← Overview").click()
        wait(phone, lambda d: d.find_elements(By.CSS_SELECTOR, "#projects tr[data-project=acme]"))
        assert phone.execute_script("return document.documentElement.scrollWidth") <= 390
    finally:
        phone.quit()
