"""A small W3C WebDriver client (standard library only) for headless Chromium via chromedriver.

Enough for the UI tests: start chromedriver, open a session, navigate, find elements, type,
click, run a script, poll until a condition holds, take a screenshot. Nothing needs to be
pip-installed into the pinned TFX environment; Debian's `chromium` and `chromium-driver`
packages provide the browser and the driver (`make browser`).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, List, Optional

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
CHROME_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


class WebDriverError(RuntimeError):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(f"{error} (HTTP {status}): {message}")
        self.status, self.error = status, error


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Element:
    def __init__(self, browser: "Browser", element_id: str):
        self.browser, self.id = browser, element_id

    def _path(self, suffix: str = "") -> str:
        return f"/element/{self.id}{suffix}"

    def click(self) -> None:
        self.browser.command("POST", self._path("/click"), {})

    def clear(self) -> None:
        self.browser.command("POST", self._path("/clear"), {})

    def send_keys(self, text: str) -> None:
        self.browser.command("POST", self._path("/value"), {"text": text})

    @property
    def text(self) -> str:
        return self.browser.command("GET", self._path("/text"))

    def attribute(self, name: str) -> Optional[str]:
        return self.browser.command("GET", self._path(f"/attribute/{name}"))

    def property(self, name: str) -> Any:
        return self.browser.command("GET", self._path(f"/property/{name}"))

    def enabled(self) -> bool:
        return bool(self.browser.command("GET", self._path("/enabled")))

    def displayed(self) -> bool:
        return bool(self.browser.command("GET", self._path("/displayed")))


class Browser:
    """One chromedriver process and one browser session; use as a context manager."""

    def __init__(self, width: int = 1600, height: int = 1000, log_path: Optional[Path] = None):
        from tests.conftest import require

        require({"browser"}, "headless Chromium")  # a test gets the marker from the chromium fixture
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"], stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.session: Optional[str] = None
        try:
            self._wait_driver()
            answer = self._http("POST", "/session", {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [*CHROME_ARGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"],
                },
            }}})
            self.session = answer["sessionId"]
            self.command("POST", "/timeouts", {"pageLoad": 60000, "script": 30000, "implicit": 0})
        except BaseException:
            self.quit()
            raise

    # -- plumbing

    def _wait_driver(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.driver.poll() is not None:
                raise RuntimeError(f"chromedriver exited with {self.driver.returncode}")
            try:
                if self._http("GET", "/status").get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"chromedriver did not answer on port {self.port} within {timeout:.0f}s")

    def _http(self, method: str, path: str, body: Optional[dict] = None, timeout: float = 90.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            try:
                value = json.loads(err.read()).get("value") or {}
            except ValueError:
                value = {}
            raise WebDriverError(err.code, value.get("error", "unknown error"), value.get("message", "")) from None
        return payload.get("value", payload)

    def command(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        return self._http(method, f"/session/{self.session}{path}", body)

    # -- navigation and queries

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self.command("GET", "/url")

    @property
    def title(self) -> str:
        return self.command("GET", "/title")

    @property
    def source(self) -> str:
        return self.command("GET", "/source")

    def find_all(self, css: str) -> List[Element]:
        found = self.command("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self, item[ELEMENT]) for item in found]

    def find(self, css: str) -> Optional[Element]:
        found = self.find_all(css)
        return found[0] if found else None

    def execute(self, script: str, *args: Any) -> Any:
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25,
                 what: str = "condition") -> Any:
        """Polls `condition` until it returns something truthy; WebDriver errors count as not yet."""
        deadline = time.monotonic() + timeout
        last_error: Optional[Exception] = None
        while True:
            try:
                value = condition()
                if value:
                    return value
            except WebDriverError as err:
                last_error = err
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (url {self._safe_url()}"
                                   + (f"; last error: {last_error}" if last_error else "") + ")")
            time.sleep(interval)

    def wait_element(self, css: str, timeout: float = 30.0) -> Element:
        return self.wait_for(lambda: self.find(css), timeout, what=f"element {css!r}")

    def body_text(self) -> str:
        return self.execute("return document.body ? document.body.innerText : '';") or ""

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.command("GET", "/screenshot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    def _safe_url(self) -> str:
        try:
            return self.url
        except Exception:  # noqa: BLE001 -- only for an error message
            return "?"

    # -- lifetime

    def quit(self) -> None:
        if self.session:
            try:
                self._http("DELETE", f"/session/{self.session}", timeout=30)
            except (OSError, WebDriverError):
                pass
            self.session = None
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.quit()
