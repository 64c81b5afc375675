"""The chat page at / in headless Chromium (selenium): streamed replies, the stop button, the memory report.

Needs a Chromium and its driver: where none is found, the test installs Debian's (`apt-get
install -y chromium chromium-driver`, when it runs as root with apt-get), and skips, saying
why, only when that fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tensora.serve import BackgroundServer, Settings, create_app

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _find() -> tuple[str | None, str | None]:
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    return binary, shutil.which("chromedriver")


def _install() -> str:
    """Install Debian's Chromium and driver; '' on success, else why not."""
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "no apt-get, or not root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} took over 600 s"
        if done.returncode:
            return f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return ""


def _browser():
    binary, driver = _find()
    if binary is None or driver is None:
        why = _install()
        binary, driver = _find()
        if binary is None or driver is None:
            pytest.skip(f"no Chromium with chromedriver, and installing Debian's failed ({why or 'not found after'})")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="module")
def page(tiny_model):
    app = create_app(tiny_model, model_id="tiny", settings=Settings(max_batch=4))
    browser = _browser()
    try:
        with BackgroundServer(app) as server:
            browser.get(server.url + "/")
            yield browser, server
    finally:
        browser.quit()


def _set(browser, element_id, value):
    box = browser.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(str(value))


def _send(browser, text):
    _set(browser, "prompt", text)
    browser.find_element(By.ID, "send").click()


def test_page_streams_a_reply_equal_to_the_model(page, tiny_model):
    browser, _ = page
    wait = WebDriverWait(browser, 20)
    wait.until(lambda b: b.find_element(By.ID, "model").get_attribute("value") == "tiny")
    _set(browser, "temperature", 0)
    _set(browser, "max-tokens", 12)
    _send(browser, "hello there")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".message.assistant[data-done]"))
    reply = browser.find_element(By.CSS_SELECTOR, ".message.assistant").get_attribute("textContent")
    want = tiny_model.chat([{"role": "user", "content": "hello there"}], max_new_tokens=12, temperature=0)
    assert reply == want.text
    assert "12 tokens" in browser.find_element(By.ID, "status").text
    wait.until(lambda b: "total" in b.find_element(By.ID, "memory").text)
    assert "float32" in browser.find_element(By.ID, "memory").text


def test_second_turn_keeps_the_conversation_and_stop_ends_a_reply(page, tiny_model):
    browser, server = page
    wait = WebDriverWait(browser, 20)
    _set(browser, "max-tokens", 4000)
    _send(browser, "and now a long one")
    stop = browser.find_element(By.ID, "stop")
    wait.until(lambda b: stop.is_enabled() and len(b.find_elements(By.CSS_SELECTOR, ".message.assistant")) == 2
               and b.find_elements(By.CSS_SELECTOR, ".message.assistant")[1].get_attribute("textContent"))
    stop.click()
    wait.until(lambda b: b.find_element(By.ID, "status").text == "stopped")
    engine = server.app.state.hosted.engine
    wait.until(lambda b: engine.active == 0)  # the aborted stream freed its row
    assert browser.find_element(By.ID, "send").is_enabled()
    bubbles = browser.find_elements(By.CSS_SELECTOR, ".message")
    assert [b.get_attribute("class") for b in bubbles] == ["message user", "message assistant"] * 2
