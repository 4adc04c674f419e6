"""A real headless browser for the console's tests: Debian's chromium driven by its
chromium-driver through Selenium (`tools/devstack.py fetch` installs both).

Selenium is synchronous: the tests run its steps in a thread (``await run(step)``), so the
stack's own peers, which live on the test's event loop, keep answering meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tools.axe_core import VERSION as AXE_VERSION
from tools.axe_core import ensure_axe_core

T = TypeVar("T")
AXE_SCRIPT = ensure_axe_core()

DESKTOP = (1280, 860)
PHONE = (390, 844)
WAIT_S = 20.0


def chromium() -> WebDriver:
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert binary and driver_path, "chromium and chromium-driver: run `make fetch`"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    return driver


def open_browser() -> Iterator[WebDriver]:
    """A browser for a module's tests (``yield from`` it in a module-scoped fixture)."""
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


async def run(step: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(step, *args)


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = WAIT_S) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def visible(driver: WebDriver, css: str, timeout: float = WAIT_S) -> Any:
    return wait(
        driver, expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout
    )


def sign_in_with_token(
    driver: WebDriver, base: str, token: str, next_path: str = "/console/"
) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}{next_path}")
    field = visible(driver, "#token")
    field.send_keys(token)
    field.submit()
    wait(driver, lambda d: "/console/login" not in d.current_url)


def post_form(driver: WebDriver, button_css: str) -> None:
    """Click a form's button and wait for the page it leads to (303 back)."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, button_css).click()
    wait(driver, lambda _: _replaced(old))


def _replaced(element: Any) -> bool:
    """The page ``element`` belonged to is gone: selenium's staleness_of knows only the
    stale-reference error, and chromium may instead answer "Node with given id does not
    belong to the document" while the new page replaces the old (met once in CI)."""
    try:
        element.is_enabled()
    except WebDriverException:  # stale, or detached mid-navigation
        return True
    return False


def flash(driver: WebDriver) -> str:
    return str(visible(driver, ".flash").text)


def emulate(driver: WebDriver, size: tuple[int, int], dark: bool) -> None:
    """The viewport (phone width is a mobile device) and prefers-color-scheme."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size == PHONE},
    )
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
    )


def axe_violations(driver: WebDriver) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page: axe-core at the version
    pinned in tools/axe_core.py (fetched once from the npm registry, checksummed), injected
    through WebDriver (the page's CSP does not apply to it), every rule it runs by default
    (WCAG 2.0-2.2 A/AA and best practices)."""
    driver.execute_script(AXE_SCRIPT.read_text())
    driver.set_script_timeout(60)
    results = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then((r) => done({version: r.testEngine.version, violations: r.violations}),"
        " (e) => done({error: String(e)}));"
    )
    assert "error" not in results, results
    assert results["version"] == AXE_VERSION, results["version"]
    return [v for v in results["violations"] if v.get("impact") in ("serious", "critical")]


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n.get("target")) for n in v.get("nodes", [])[:3])
        for v in violations
    )


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def screenshot(driver: WebDriver, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug(name)}.png"
    driver.execute_script("window.scrollTo(0, 0)")  # axe scrolls while it checks contrast
    assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
    # 256 colours are plenty for these pages and a third of the bytes in the repository.
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(256)
    small.save(path, optimize=True)
    return path
