"""Headless Chromium for tests: Debian's chromium driven by its chromedriver through selenium (no
browser download; Selenium Manager is never asked because the driver path is given)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def missing() -> str | None:
    """Why no browser can run here, or None."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} not installed (Debian package {pkg}; `make test` installs it when root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


class Browser:
    def __init__(self, width: int = 1300, height: int = 1000) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.mkdtemp(prefix="routeq-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
        ):
            opts.add_argument(a)
        self.driver: Any = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))

    def get(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def wait_for(self, script: str, timeout: float = 20.0) -> Any:
        """Poll a JS expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.js(f"return ({script});")
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied: {script}")
            time.sleep(0.1)

    def text(self, selector: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.CSS_SELECTOR, selector).text)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
