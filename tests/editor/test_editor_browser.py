"""The mask editor page in a real browser (headless Chromium through Selenium): paint a stroke, delete an
organ, generate k = 2 with seed 7, and check that the server received exactly the intended label map.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the test
fails, naming the packages. The server runs in-process (uvicorn in a thread) on a tiny study built by
:func:`editor_fixture.build_results`. Leaves a screenshot of the page in ``logs/editor_screenshot.png``.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from editor_fixture import UNSEEN, build_results

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT = REPO / "logs/editor_screenshot.png"
WAIT_S = 60


def _browser_paths() -> tuple[Path, Path, str]:
    """Chromium and chromedriver, and what is missing of them ("" if nothing)."""
    chromium = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or CHROMIUM)
    driver = CHROMEDRIVER if CHROMEDRIVER.exists() else Path(shutil.which("chromedriver") or CHROMEDRIVER)
    missing = [str(p) for p in (chromium, driver) if not p.exists()]
    if not missing:
        return chromium, driver, ""
    return chromium, driver, (f"the browser test needs Chromium and its WebDriver, missing: {', '.join(missing)}; install "
                              "them with `apt-get install chromium chromium-driver` (Debian; .ci/run does this)")


def _require(browser):
    """The WebDriver, or the test fails (not an error in a fixture, never a skip) naming the packages to install."""
    if isinstance(browser, str):
        pytest.fail(browser, pytrace=False)
    return browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(app, base URL) of the editor serving a tiny study, in a daemon thread of this process."""
    import uvicorn

    from segdiff.editor.app import create_app

    app = create_app(build_results(tmp_path_factory.mktemp("results")), device="cpu")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True, name="editor-server")
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "api/config", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the editor server did not start answering within 30 s", pytrace=False)
        time.sleep(0.1)
    yield app, url
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    chromium, driver_path, missing = _browser_paths()
    if missing:
        yield missing
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _most_organs(url: str) -> int:
    """The index of the test mask of the first model that holds the most organs (the first such)."""
    model = _get(url + "api/config")["models"][0]
    counts = [len(np.unique(_mask(_get(url + f"api/models/{model['id']}/test-masks/{i}")["mask"]))) - 1
              for i in range(model["test_slices"])]
    return int(np.argmax(counts))


def _mask(payload: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(payload["data"]), np.uint8).reshape(payload["height"], payload["width"]).copy()


def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        message = driver.execute_script("return document.getElementById('message').textContent")
        pytest.fail(f"timed out after {timeout} s waiting for {what}; page message: {message!r}", pytrace=False)


def _open_at_richest_mask(driver, url: str, by_enter: bool) -> int:
    """Open the page, wait until it is ready, and load the test mask with the most organs (through the Load
    button, or Enter in the index box); returns its index."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    _wait(driver, lambda d: d.execute_script("return !!(window.segdiffEditor && window.segdiffEditor.ready)"),
          "the page to load its config and first mask")
    index = _most_organs(url)
    box = driver.find_element(By.ID, "test-index")
    box.clear()
    if by_enter:
        box.send_keys(str(index), Keys.ENTER)
    else:
        box.send_keys(str(index))
        driver.find_element(By.ID, "load-test").click()
    _wait(driver, lambda d: d.find_element(By.ID, "mask-info").text.startswith(f"test mask {index}:"), f"test mask {index}")
    return index


def test_paint_delete_generate_sends_the_exact_label_map(server, browser, downloads):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    app, url = server
    driver = _require(browser)
    index = _open_at_richest_mask(driver, url, by_enter=False)
    initial = _mask(driver.execute_script("return window.segdiffEditor.getMask()"))
    model = _get(url + "api/config")["models"][0]
    np.testing.assert_array_equal(initial, _mask(_get(url + f"api/models/{model['id']}/test-masks/{index}")["mask"]))
    h, w = initial.shape
    assert (h, w) == (32, 32)

    labels = [int(o.get_attribute("value")) for o in Select(driver.find_element(By.ID, "label")).options]
    present = sorted(set(np.unique(initial).tolist()) - {0})
    assert UNSEEN in labels and UNSEEN not in present and present, (labels, present)
    paint, delete = UNSEEN, max(present, key=lambda i: int((initial == i).sum()))  # delete the largest organ

    # paint: label UNSEEN, brush 3, a horizontal stroke along mask row y from column x0 to x1
    Select(driver.find_element(By.ID, "label")).select_by_value(str(paint))
    driver.find_element(By.ID, "tool-paint").click()
    driver.execute_script("const b = document.getElementById('brush'); b.value = '3';"
                          "b.dispatchEvent(new Event('input', {bubbles: true}));")
    canvas = driver.find_element(By.ID, "mask-canvas")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    sx, sy = rect[0] / w, rect[1] / h  # screen px per mask px
    y, x0, x1 = h // 2, 3, w - 8

    def offset(row: int, col: int) -> tuple[int, int]:  # from the element's centre (Selenium 4), to a pixel's centre
        return round((col + 0.5) * sx - rect[0] / 2), round((row + 0.5) * sy - rect[1] / 2)

    chain = ActionChains(driver, duration=10).move_to_element_with_offset(canvas, *offset(y, x0)).click_and_hold()
    for col in (x0 + 7, x0 + 15, x1):  # large jumps: the page must fill the gaps between mouse positions
        chain.move_to_element_with_offset(canvas, *offset(y, col))
    chain.release().perform()

    Select(driver.find_element(By.ID, "label")).select_by_value(str(delete))
    driver.find_element(By.ID, "delete-organ").click()
    assert driver.execute_script("return window.segdiffEditor.undoDepth()") == 2  # one undo step each

    expected = initial.copy()
    expected[max(0, y - 1) : y + 2, max(0, x0 - 1) : min(w, x1 + 2)] = paint
    expected[expected == delete] = 0
    np.testing.assert_array_equal(_mask(driver.execute_script("return window.segdiffEditor.getMask()")), expected)
    message = driver.find_element(By.ID, "message")
    assert "warning" in message.get_attribute("class") and "never saw" in message.text, message.text

    for field, value in (("k", 2), ("seed", 7)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value))
    received_before = len(app.state.received_masks)
    driver.find_element(By.ID, "generate").click()
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results img.generation")) == 2
          and d.find_element(By.ID, "seed-shown").text.strip() == "7", "2 generations shown with seed 7")

    assert len(app.state.received_masks) == received_before + 1
    np.testing.assert_array_equal(app.state.received_masks[-1], expected)
    for img in driver.find_elements(By.CSS_SELECTOR, "#results img.generation"):
        src = img.get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert png.format == "PNG" and png.size == (w, h)
    assert len(driver.find_elements(By.CSS_SELECTOR, "a.download-generation")) == 2

    driver.find_element(By.ID, "download-mask-npy").click()  # fetch + Blob + <a download>
    _wait(driver, lambda d: list(downloads.glob("*mask.npy")), "the mask .npy download", timeout=20)
    np.testing.assert_array_equal(np.load(next(downloads.glob("*mask.npy"))), expected)
    assert driver.find_element(By.ID, "progress").get_attribute("value") == driver.find_element(By.ID, "progress").get_attribute("max")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT))


def _translated(mask: np.ndarray, label: int, dy: int, dx: int) -> np.ndarray:
    """The editor's move: ``label`` shifted by (dy, dx); vacated pixels 0, pixels outside dropped, overwrites."""
    out = np.where(mask == label, 0, mask).astype(np.uint8)
    ys, xs = np.nonzero(mask == label)
    keep = (ys + dy >= 0) & (ys + dy < mask.shape[0]) & (xs + dx >= 0) & (xs + dx < mask.shape[1])
    out[ys[keep] + dy, xs[keep] + dx] = label
    return out


def _scaled(mask: np.ndarray, label: int, f: float) -> np.ndarray:
    """The editor's scale: nearest neighbour about the centroid of the pixel centres (inverse mapping)."""
    ys, xs = np.nonzero(mask == label)
    cy, cx = float(np.sum(ys + 0.5)) / len(ys), float(np.sum(xs + 0.5)) / len(xs)
    out = np.where(mask == label, 0, mask).astype(np.uint8)
    ty, tx = np.meshgrid(np.arange(mask.shape[0]), np.arange(mask.shape[1]), indexing="ij")
    sy, sx = np.floor(cy + (ty + 0.5 - cy) / f).astype(int), np.floor(cx + (tx + 0.5 - cx) / f).astype(int)
    ok = (sy >= 0) & (sy < mask.shape[0]) & (sx >= 0) & (sx < mask.shape[1])
    hit = np.zeros_like(ok)
    hit[ok] = mask[sy[ok], sx[ok]] == label
    out[hit] = label
    return out


def test_move_scale_erase_undo_and_upload(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    app, url = server
    driver = _require(browser)
    _open_at_richest_mask(driver, url, by_enter=True)

    def mask() -> np.ndarray:
        return _mask(driver.execute_script("return window.segdiffEditor.getMask()"))

    def set_value(field: str, value) -> None:
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value))

    initial = mask()
    h, w = initial.shape
    organs = sorted(set(np.unique(initial).tolist()) - {0}, key=lambda i: -int((initial == i).sum()))
    organ = organs[0]
    Select(driver.find_element(By.ID, "label")).select_by_value(str(organ))

    set_value("move-dy", 3)
    set_value("move-dx", -2)
    driver.find_element(By.ID, "move-organ").click()
    expected = _translated(initial, organ, 3, -2)
    assert not np.array_equal(expected, initial)
    np.testing.assert_array_equal(mask(), expected)

    set_value("scale-factor", 1.5)
    driver.find_element(By.ID, "scale-organ").click()
    before, expected = expected, _scaled(expected, organ, 1.5)
    assert (expected == organ).sum() > (before == organ).sum()
    np.testing.assert_array_equal(mask(), expected)
    set_value("scale-factor", 0.5)
    driver.find_element(By.ID, "scale-organ").click()
    before, expected = expected, _scaled(expected, organ, 0.5)
    assert 0 < (expected == organ).sum() < (before == organ).sum()
    np.testing.assert_array_equal(mask(), expected)

    # drag with the move tool: the organ follows the pointer by whole mask pixels
    canvas = driver.find_element(By.ID, "mask-canvas")
    width, height = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    sx, sy = width / w, height / h

    def offset(row: int, col: int) -> tuple[int, int]:
        return round((col + 0.5) * sx - width / 2), round((row + 0.5) * sy - height / 2)

    ys, xs = np.nonzero(expected == organ)
    start = (int(ys[0]), int(xs[0]))
    driver.find_element(By.ID, "tool-move").click()
    (ActionChains(driver, duration=10).move_to_element_with_offset(canvas, *offset(*start)).click_and_hold()
     .move_to_element_with_offset(canvas, *offset(start[0] - 1, start[1] + 2))
     .move_to_element_with_offset(canvas, *offset(start[0] - 2, start[1] + 4)).release().perform())
    expected = _translated(expected, organ, -2, 4)
    np.testing.assert_array_equal(mask(), expected)

    # erase a diagonal stroke with brush 1: the Bresenham line between the two positions
    driver.find_element(By.ID, "tool-erase").click()
    driver.execute_script("const b = document.getElementById('brush'); b.value = '1';"
                          "b.dispatchEvent(new Event('input', {bubbles: true}));")
    (ActionChains(driver, duration=10).move_to_element_with_offset(canvas, *offset(2, 2)).click_and_hold()
     .move_to_element_with_offset(canvas, *offset(h - 3, w - 3)).release().perform())
    diagonal = np.arange(2, min(h, w) - 2)
    assert expected[diagonal, diagonal].any()
    expected[diagonal, diagonal] = 0
    np.testing.assert_array_equal(mask(), expected)
    assert driver.execute_script("return window.segdiffEditor.undoDepth()") == 5

    driver.find_element(By.ID, "undo").click()  # then Ctrl+Z four times (focus on a button, not in a field)
    for _ in range(4):
        ActionChains(driver).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    np.testing.assert_array_equal(mask(), initial)
    assert driver.execute_script("return window.segdiffEditor.undoDepth()") == 0

    # upload a PNG label map (pixel = id), then a file that is not a mask: the server's message is shown
    uploaded = np.zeros((h, w), np.uint8)
    uploaded[4:9, 5:20], uploaded[20:, :7] = 6, 1
    png = tmp_path / "mask.png"
    Image.fromarray(uploaded).save(png)
    driver.find_element(By.CSS_SELECTOR, "#upload-box summary").click()
    driver.find_element(By.ID, "upload-file").send_keys(str(png))
    driver.find_element(By.ID, "upload").click()
    _wait(driver, lambda d: d.find_element(By.ID, "mask-info").text.startswith("uploaded mask.png"), "the uploaded mask")
    np.testing.assert_array_equal(mask(), uploaded)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    driver.find_element(By.ID, "upload-file").send_keys(str(bad))
    driver.find_element(By.ID, "upload").click()
    _wait(driver, lambda d: "error" in d.find_element(By.ID, "message").get_attribute("class"), "an error message")
    assert "not a PNG" in driver.find_element(By.ID, "message").text
    np.testing.assert_array_equal(mask(), uploaded)  # unchanged
