"""`linebridge demo` end to end: a real Gradio server on loopback driven by headless Chromium (selenium).

Needs the `demo` extra (gradio), selenium, and Debian's chromium + chromium-driver. Without
them the browser tests skip, except in CI (CI=true), where they must run and fail instead.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_root
from linebridge.cli import main as cli_main
from linebridge.core.config import UserError

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT = 60  # s: generous, the machine may be busy
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip when a browser-test prerequisite is missing, but fail in CI, where it must be installed."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the browser tests must run, not skip)")
        pytest.skip(reason)


def have_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tiny_checkpoint) -> Path:
    """The session's tiny A3 checkpoint (read only: demo_root copies it)."""
    return tiny_checkpoint.best


@pytest.fixture(scope="module")
def demo_root(tiny_study, trained, tmp_path_factory) -> Path:
    """A study root with the tiny prepared data and the checkpoint at outputs/train/A3/best.pt."""
    root = make_root(tmp_path_factory.mktemp("demo_root"))
    (root / "outputs" / "train" / "A3").mkdir(parents=True)
    shutil.copy(trained, root / "outputs" / "train" / "A3" / "best.pt")
    (root / "outputs" / "prepared").symlink_to(tiny_study / "outputs" / "prepared")
    return root


@pytest.fixture(scope="module")
def inputs(tiny_study, tmp_path_factory) -> dict[str, Path]:
    """A non-square 40×28 line art, a reference (from the prepared test set) and a text file saved as .png."""
    folder = tmp_path_factory.mktemp("demo_inputs")
    prepared = tiny_study / "outputs" / "prepared"
    item = (prepared / "protocols" / "self.csv").read_text().splitlines()[1].split(",")[0]
    Image.open(prepared / "line" / f"{item}.png").convert("L").resize((40, 28)).save(folder / "line.png")
    shutil.copy(prepared / "protocols" / "self" / "ref" / f"{item}.png", folder / "ref.png")
    (folder / "broken.png").write_text("this is text, not a picture\n")
    return {"line": folder / "line.png", "ref": folder / "ref.png", "broken": folder / "broken.png"}


def serve(root: Path, checkpoint: Path | None = None):
    from linebridge.demo import build_app, launch

    app, allowed = build_app(root, checkpoint)
    port = free_port()
    launch(app, allowed, "127.0.0.1", port, block=False)
    return app, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser():
    need(have_module("gradio"), "gradio is not installed (pip install -e '.[demo]')")
    need(have_module("selenium"), "selenium is not installed (pip install -e '.[test]')")
    need(
        CHROMIUM.exists() and CHROMEDRIVER.exists(),
        "no /usr/bin/chromium or /usr/bin/chromedriver (apt-get install chromium chromium-driver)",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1300",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(browser, demo_root):
    app, url = serve(demo_root)
    yield url
    app.close()


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(condition, message=f"timed out waiting for {what}")


def open_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#colorize"), "the page")


def upload(driver, elem_id: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def image_src(driver, elem_id: str) -> str | None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return found[0].get_attribute("src") if found and found[0].get_attribute("src") else None


def text(driver, elem_id: str = "status") -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id}").text


def fetch_image(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB")


def click_colorize(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#colorize").click()


# ----------------------------------------------------------------------------- browser


@pytest.mark.slow  # a Gradio server and headless Chromium
def test_broken_upload_is_a_message_in_the_page(browser, server, inputs):
    open_page(browser, server)
    upload(browser, "line-file", inputs["broken"])
    upload(browser, "ref-file", inputs["ref"])
    wait_for(browser, lambda d: "corrupt" in text(d, "line-note"), "the preview's error message")
    wait_for(browser, lambda d: image_src(d, "ref-preview"), "the reference preview")
    click_colorize(browser)
    wait_for(browser, lambda d: "Error" in text(d) and "broken.png" in text(d), "the error message")
    assert "truncated or corrupt image" in text(browser)
    assert "/tmp" not in text(browser), "the upload's temp folder is cut from the message"
    assert image_src(browser, "result") is None


@pytest.mark.slow  # a Gradio server and headless Chromium
def test_upload_colorize_shows_result_at_input_size_and_path(browser, server, inputs):
    """Runs after the broken upload on the same server: the app kept serving."""
    open_page(browser, server)
    upload(browser, "line-file", inputs["line"])
    upload(browser, "ref-file", inputs["ref"])
    wait_for(browser, lambda d: image_src(d, "line-preview") and image_src(d, "ref-preview"), "the previews")
    click_colorize(browser)
    src = wait_for(browser, lambda d: image_src(d, "result"), "the colorized image")
    wait_for(browser, lambda d: "Colorized 40×28 in" in text(d), "the timing line")
    result = fetch_image(src)
    line = Image.open(inputs["line"]).convert("RGB")
    assert result.size == line.size == (40, 28)
    assert np.abs(np.asarray(result, dtype=np.int16) - np.asarray(line, dtype=np.int16)).mean() > 1
    strip = fetch_image(wait_for(browser, lambda d: image_src(d, "path"), "the bridge's path"))
    assert strip.width > 5 * strip.height // 2, "line art plus several x̂0 panels side by side"


@pytest.mark.slow  # a Gradio server and headless Chromium
def test_gallery_example_fills_inputs_and_ground_truth(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    items = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery button img"), "the gallery")
    items[0].click()
    wait_for(
        browser,
        lambda d: image_src(d, "ground-truth") and image_src(d, "line-preview") and image_src(d, "ref-preview"),
        "the example's line art, reference and ground truth",
    )
    assert text(browser).startswith("Example self")
    click_colorize(browser)
    src = wait_for(browser, lambda d: image_src(d, "result"), "the colorized example")
    assert fetch_image(src).size == fetch_image(image_src(browser, "ground-truth")).size


@pytest.mark.slow  # a Gradio server and headless Chromium
def test_no_checkpoint_page_says_how_to_get_one(browser, tmp_path):
    from selenium.webdriver.common.by import By

    app, url = serve(make_root(tmp_path / "empty"))
    try:
        open_page(browser, url)
        note = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#no-checkpoint").text, "the note")
        assert "No trained checkpoint found" in note and "dvc repro train@A5-s0" in note and "--checkpoint" in note
        assert "weights/linebridge.safetensors" in note  # the released weights, and how to restore them
        assert "No example gallery" in browser.find_element(By.CSS_SELECTOR, "#no-gallery").text
        assert not browser.find_element(By.CSS_SELECTOR, "#colorize").is_enabled()
        assert "Traceback" not in browser.page_source
    finally:
        app.close()


# ----------------------------------------------------------------------------- without a browser


def test_wrong_checkpoints_and_settings_are_user_errors(trained, inputs, tmp_path):
    from linebridge.demo import colorize_once

    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="foreign.pt"):
        colorize_once(tmp_path / "foreign.pt", inputs["line"], inputs["ref"])
    state = torch.load(trained, weights_only=True)
    state["ema"] = {k: v[..., :1] if v.dim() else v for k, v in state["ema"].items()}  # wrong-size weights
    torch.save(state, tmp_path / "shrunk.pt")
    with pytest.raises(UserError, match="shrunk.pt: not a usable linebridge checkpoint"):
        colorize_once(tmp_path / "shrunk.pt", inputs["line"], inputs["ref"])
    with pytest.raises(UserError, match="from a reference"):
        colorize_once(trained, inputs["line"], None, steps=4)
    with pytest.raises(UserError, match="steps = 1"):
        colorize_once(trained, inputs["line"], inputs["ref"], steps=1)
    out = colorize_once(trained, inputs["line"], inputs["ref"], deterministic=True, steps=4)
    assert out.image.size == (40, 28) and out.path is not None and "deterministic" in out.summary


def test_gan_baseline_has_no_path_but_a_note(tiny_study, inputs, tmp_path, monkeypatch):
    from linebridge.demo import colorize_once

    monkeypatch.chdir(tiny_study)
    assert (
        cli_main(
            [
                "train",
                "--experiment",
                "pix2pix",
                "--profile",
                "tiny",
                "--no-mlflow",
                "--out",
                str(tmp_path),
                "--set",
                "train.epochs=1",
            ]
        )
        == 0
    )
    out = colorize_once(tmp_path / "best.pt", inputs["line"], None)
    assert out.image.size == (40, 28) and out.path is None and "no bridge path" in out.summary
