"""Headless Chromium for the browser tests: Debian's chromium, chromium-driver and
python3-selenium (scripts/deps.sh installs them). Chinese renders with fonts-noto-cjk.

    drv = browser.chrome(width=390, height=844, lang="zh-CN")   # a phone, in Chinese
    drv.get(url); browser.shot(drv, "widget-phone")
"""

import os
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = os.environ.get("KEFU_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("KEFU_CHROMEDRIVER", "/usr/bin/chromedriver")
LIVE = []


def chrome(width=1280, height=900, lang="en-US"):
    """A headless Chromium of this viewport whose navigator.language is lang; quit() it, or
    let quit_all() (the spawn fixture's teardown) do it."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", f"--window-size={width},{height}",
              f"--lang={lang}"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"intl.accept_languages": lang})
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(30)
    # headless windows have a minimum width (about 500 px): a phone's viewport needs emulation
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    LIVE.append(drv)
    return drv


def quit_all():
    while LIVE:
        try:
            LIVE.pop().quit()
        except Exception:  # noqa: BLE001 - a browser that already died
            pass


def shot(drv, name):
    """Saves a PNG screenshot as <name>.png under $KEFU_SCREENSHOT_DIR (e.g. docs/screenshots
    when refreshing the README's pictures), else under the tests' temp dir; returns its path."""
    d = Path(os.environ.get("KEFU_SCREENSHOT_DIR") or os.environ.get("TMPDIR", "/tmp"))
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.png"
    drv.save_screenshot(str(p))
    return p
