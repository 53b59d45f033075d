"""A real browser (Debian's chromium, headless, through chromedriver) against
``dask-platform local --hub``: a user logs into JupyterHub, gets JupyterLab on a worker
node, runs a cell that creates a cluster with ``Gateway()`` and computes; another user
cannot open that server. Screenshots are kept in ``test-artifacts/`` (CI keeps them)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, let_users_through
from tests.local.test_local import REPO, LocalRun

ARTIFACTS = Path(os.environ.get("DASK_PLATFORM_TEST_ARTIFACTS", REPO / "test-artifacts"))
CELL = [
    "from dask_gateway import Gateway",
    "gateway = Gateway()",
    "cluster = gateway.new_cluster()",
    "cluster.scale(1)",
    "client = cluster.get_client()",
    "client.wait_for_workers(1, timeout=120)",
    'print("the answer is", client.submit(sum, range(101)).result())',
]
"""Typed into the first cell, line by line, as a user would."""

needs_chromium = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (./dev test and CI install them)")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[str]:
    let_users_through(tmp_path)
    port = free_port()
    run = LocalRun("--hub", "--hub-port", str(port), "--state-dir", str(tmp_path / "state"))
    try:
        run.wait_for("ready: ")
        yield f"http://127.0.0.1:{port}"
    finally:
        run.kill()


def _browser(downloads: Path):  # noqa: ANN202 - selenium's WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,900", f"--user-data-dir={downloads}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def _log_in(driver, hub: str, user: str) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    driver.get(f"{hub}/hub/login")
    driver.find_element(By.ID, "username_input").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys(f"{user}-demo")
    driver.find_element(By.ID, "login_submit").click()


def _wait(driver, condition, timeout: float, what: str, shot: Path):  # noqa: ANN001, ANN202
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        driver.save_screenshot(str(shot))
        raise AssertionError(f"{what} (screenshot {shot}; page {driver.current_url})") from None


@needs_chromium
def test_a_user_computes_from_jupyterlab_and_another_user_cannot_open_it(
        hub: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = _browser(tmp_path / "chromium-engineer1")
    try:
        _log_in(driver, hub, "engineer1")
        # The hub starts the server on a worker node, then JupyterLab opens.
        _wait(driver, seen.presence_of_element_located(
            (By.CSS_SELECTOR, ".jp-LauncherCard[data-category='Notebook']")), 240,
            "JupyterLab's launcher did not appear", ARTIFACTS / "jupyterlab-launcher.png")
        assert "/user/engineer1/lab" in driver.current_url
        driver.find_element(By.CSS_SELECTOR, ".jp-LauncherCard[data-category='Notebook']"
                            ).click()
        editor = _wait(driver, seen.element_to_be_clickable(
            (By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")), 120,
            "no notebook cell to type in", ARTIFACTS / "jupyterlab-notebook.png")
        _wait(driver, seen.text_to_be_present_in_element(
            (By.ID, "jp-main-statusbar"), "Idle"),
            120, "the kernel did not start", ARTIFACTS / "jupyterlab-kernel.png")
        for button in driver.find_elements(By.XPATH, "//button[normalize-space()='No']"):
            button.click()  # JupyterLab's question about news, in the screenshot's way
        editor.click()
        for line in CELL:
            editor.send_keys(line)
            editor.send_keys(Keys.ENTER)
            time.sleep(0.1)
        editor.send_keys(Keys.SHIFT, Keys.ENTER)
        _wait(driver, seen.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".jp-OutputArea-output"), "the answer is 5050"), 240,
            "the cell did not print the answer", ARTIFACTS / "jupyterlab-cell.png")
        driver.save_screenshot(str(ARTIFACTS / "jupyterlab-gateway-cell.png"))
        server_url = driver.current_url
    finally:
        driver.quit()

    other = _browser(tmp_path / "chromium-analyst1")
    try:
        _log_in(other, hub, "analyst1")
        _wait(other, seen.url_contains("/user/analyst1"), 240,
              "analyst1's own server did not open", ARTIFACTS / "analyst1-login.png")
        other.get(server_url)
        _wait(other, seen.presence_of_element_located((By.TAG_NAME, "body")), 60,
              "no page", ARTIFACTS / "analyst1-forbidden.png")
        time.sleep(2)
        other.save_screenshot(str(ARTIFACTS / "analyst1-forbidden.png"))
        body = other.find_element(By.TAG_NAME, "body").text
        assert "403" in body, body[:500]
        assert not other.find_elements(By.CSS_SELECTOR, ".jp-Notebook")
    finally:
        other.quit()
