"""The web UI end to end in headless Chromium (Debian `chromium` + `chromium-driver`, driven by Selenium).

The page is filled in like a user would: a dataset, a method parameter, a short training, then the Train button
starts `tuneforge train` as a subprocess; the loss plot appears from metrics.jsonl; the Chat tab loads the run and
answers. Screenshots go to $TUNEFORGE_WEBUI_SHOTS when it is set (docs/webui/*.png were taken this way).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio", reason="the web UI needs the webui extra (pip install -e '.[webui]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (webui extra)")

from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tuneforge.config import load  # noqa: E402
from tuneforge.methods import METHOD_PARAMS  # noqa: E402
from tuneforge.webui.app import EMPTY_ANSWER  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
        reason="headless browser test needs the Debian packages chromium and chromium-driver (apt-get install -y "
        "chromium chromium-driver; .ci/run installs them)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app_url(tmp_path: Path, tiny_model_dir: Path) -> Iterator[str]:
    from tuneforge.webui.app import launch

    runs = tmp_path / "runs"
    cfg = load(
        {"name": "preset", "model": {"path": str(tiny_model_dir)}, "output": {"dir": str(runs)}}, methods=METHOD_PARAMS
    )
    port = free_port()
    app = launch(cfg, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.webui.jobs.stop_all()  # type: ignore[attr-defined]
    app.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1800",
    ):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except WebDriverException as e:
        pytest.skip(f"chromium would not start: {e.msg}")
    yield driver
    driver.quit()


def by_key(key: str, inner: str = "") -> str:
    """CSS selector of the widget whose elem_id is a config key path (ids contain dots)."""
    return ", ".join(f"[id='{key}'] {part.strip()}".strip() for part in inner.split(","))


class Page:
    def __init__(self, driver: Any, shots: Path | None) -> None:
        self.d = driver
        self.shots = shots

    def find(self, css: str) -> Any:
        return self.d.find_element(By.CSS_SELECTOR, css)

    def wait(self, what: Callable[[], Any], timeout: float = 30, message: str = "") -> Any:
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.25).until(lambda _: what(), message)
        except TimeoutException:
            self.shot("failure")
            raise

    def present(self, css: str, timeout: float = 20) -> Any:
        """The element, once it is in the page (an opened accordion renders its widgets a moment later)."""
        return self.wait(lambda: (self.d.find_elements(By.CSS_SELECTOR, css) or [None])[0], timeout, f"no {css}")

    def text_of(self, key: str) -> str:
        return str(self.find(by_key(key, "textarea, input")).get_attribute("value") or "")

    def fill(self, key: str, value: str) -> None:
        box = self.present(by_key(key, "textarea, input"))
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(value)
        self.d.execute_script("arguments[0].blur()", box)  # Gradio sends the value; no other widget gets focus

    def click(self, css: str) -> None:
        el = self.present(css)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()

    def open_section(self, title: str) -> None:
        for button in self.d.find_elements(By.CSS_SELECTOR, "button.label-wrap"):
            if button.text.split("\n")[0].strip() == title:
                self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
                button.click()
                return
        raise AssertionError(f"no section {title!r}")

    def tab(self, name: str) -> None:
        for tab in self.d.find_elements(By.CSS_SELECTOR, "[role='tab']"):
            if tab.text.strip() == name:
                tab.click()
                return
        raise AssertionError(f"no tab {name!r}")

    def yaml(self) -> str:
        return str(self.find("[id='config-yaml'] .cm-content").text)

    def shot(self, name: str) -> None:
        if self.shots is not None:
            self.d.execute_script("window.scrollTo(0, 0)")
            self.shots.mkdir(parents=True, exist_ok=True)
            self.d.save_screenshot(str(self.shots / f"{name}.png"))


def test_train_from_the_page_then_chat(app_url: str, browser: Any, tmp_path: Path) -> None:
    start = time.perf_counter()
    shots = os.environ.get("TUNEFORGE_WEBUI_SHOTS")
    page = Page(browser, Path(shots) if shots else None)
    browser.get(app_url)
    page.wait(lambda: "name: preset" in page.yaml(), 60, "the YAML preview never showed the preset config")

    page.fill("name", "e2e")
    box = page.find(by_key("data.datasets", "input"))
    box.click()
    page.click("li[aria-label='iso_dates']")
    page.fill("method.r", "4")
    page.fill("data.cutoff_len", "96")
    page.open_section("train")
    page.fill("train.max_steps", "3")
    page.fill("train.batch_size", "2")
    page.fill("train.lr", "-1")
    # the CLI's own validation error shows up in the page, naming the key
    page.wait(lambda: "train.lr = -1" in page.find("[id='config-error']").text, 20, "no validation error")
    page.fill("train.lr", "0.001")
    page.wait(lambda: "max_steps: 3" in page.yaml() and "lr: 0.001" in page.yaml(), 20, "YAML not updated")
    preview = page.yaml()
    assert "name: e2e" in preview and "- name: iso_dates" in preview and "r: 4" in preview, preview
    assert page.find("[id='config-error']").text.strip() == ""
    page.shot("train_form")

    page.click("[id='train-start']")
    page.wait(lambda: page.text_of("train-status").startswith(("running", "finished", "failed")), 20, "no job")
    run = tmp_path / "runs" / "e2e"
    page.wait(lambda: not page.text_of("train-status").startswith("running"), 90, "training did not end")
    assert page.text_of("train-status").startswith("finished"), page.text_of("train-log")[-3000:]
    page.wait(lambda: page.find("[id='train-loss'] canvas, [id='train-loss'] svg.marks"), 20, "no loss plot")
    assert (run / "adapter").is_dir() and (run / "metrics.jsonl").is_file()
    written = (tmp_path / "runs" / "webui" / "e2e.yaml").read_text(encoding="utf-8")
    assert load(tmp_path / "runs" / "webui" / "e2e.yaml", methods=METHOD_PARAMS).train.max_steps == 3
    assert written.startswith("# written by tuneforge webui")
    assert "done: 3 steps" in page.text_of("train-log")
    page.shot("train_done")

    page.tab("Chat")
    page.click("[id='chat-refresh']")
    page.wait(lambda: str(run) in page.text_of("chat.run"), 20, "the run is not offered in the Chat tab")
    page.click("[id='chat-load']")
    page.wait(lambda: page.text_of("chat-status").startswith("loaded"), 60, "the run did not load")
    assert str(run) in page.text_of("chat-status")
    page.fill("chat.temperature", "1.0")  # sampled: a random tiny model's greedy answer may be special tokens only
    page.fill("chat-message", "What is the capital of France?")
    page.click("[id='chat-send']")

    def answer() -> str:
        bots = browser.find_elements(By.CSS_SELECTOR, "[id='chat-history'] [data-testid='bot']")
        return str(bots[-1].text).strip() if bots else ""

    page.wait(answer, 60, "no answer in the chat")
    page.wait(lambda: not browser.find_elements(By.CSS_SELECTOR, "[id='chat-history'] .pending"), 30, "still busy")
    assert answer() not in (EMPTY_ANSWER, "(load a run or the base model first)"), answer()
    users = browser.find_elements(By.CSS_SELECTOR, "[id='chat-history'] [data-testid='user']")
    assert users and "capital of France" in users[-1].text
    page.shot("chat")
    print(f"web UI end to end: {time.perf_counter() - start:.1f} s")
