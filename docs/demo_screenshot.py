"""Redraw docs/demo.png: the demo page after colouring a gallery example (headless Chromium).

    PYTHONPATH=src python docs/demo_screenshot.py STUDY_ROOT [--item N] [-o docs/demo.png]

STUDY_ROOT needs outputs/prepared and a checkpoint under outputs/train/*/ (see the README).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from linebridge.demo import build_app, launch

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("root", type=Path)
parser.add_argument("--item", type=int, default=0, help="which gallery example to colour")
parser.add_argument("--port", type=int, default=7862)
parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("demo.png"))
args = parser.parse_args()

app, allowed = build_app(args.root.resolve())
launch(app, allowed, "127.0.0.1", args.port, block=False)
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1160"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    wait = WebDriverWait(driver, 60)
    driver.get(f"http://127.0.0.1:{args.port}/")
    items = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery button img"))
    items[args.item].click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ground-truth img"))
    for _ in range(2):  # the first run after start also pays one-off set-up; show the second
        before = driver.find_element(By.ID, "status").text
        driver.find_element(By.CSS_SELECTOR, "#colorize").click()
        wait.until(
            lambda d, before=before: (now := d.find_element(By.ID, "status").text) != before and "Colorized" in now
        )
    driver.set_window_size(1280, driver.execute_script("return document.documentElement.scrollHeight") + 140)
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(1)  # let the images finish drawing
    driver.save_screenshot(str(args.output))
    print(f"wrote {args.output}")
finally:
    driver.quit()
    app.close()
