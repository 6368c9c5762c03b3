"""The demo page in a real headless browser (Debian's chromium driven by playwright)
against a real gateway (`fer-service serve`, tests/frontends/conftest.py).

The screenshot of the classified photo is written to the test's tmp folder, and also to
`$FER_SCREENSHOTS/page.png` when that variable names a folder (how docs/images/page.png is
made).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from served import DATA, Gateway

from service.client import Client

pytestmark = pytest.mark.integration  # a real gateway, in a process of its own

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a synthetic camera (a moving test pattern, no face) that needs no permission prompt
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium (the system's: playwright downloads none here)."""
    if not CHROMIUM.exists():
        pytest.fail("no chromium: `apt-get install chromium chromium-driver` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, gateway: Gateway) -> Iterator[Any]:
    """The demo page, loaded (its models listed)."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{gateway.url}/")
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_photo_faces_are_boxed_and_labelled(page: Any, gateway: Gateway, tmp_path: Path) -> None:
    photo = DATA / "multi_face.jpg"
    with Client(gateway.url) as client:
        expected = client.classify(photo)
    assert len(expected.faces) == 5

    page.set_input_files("#photo", str(photo))
    page.wait_for_function("document.querySelectorAll('#overlay g.face').length === 5")
    page.wait_for_function("document.getElementById('image').complete")

    # Each box is drawn where the API put it, over the photo as shown on the page.
    shown = page.eval_on_selector("#image", "e => e.getBoundingClientRect().toJSON()")
    scale = shown["width"] / expected.image.width
    groups = page.query_selector_all("#overlay g.face")
    for face, group in zip(expected.faces, groups, strict=True):
        assert group.get_attribute("data-expression") == face.expression
        rect = group.query_selector("rect.box").bounding_box()
        stroke = float(group.query_selector("rect.box").get_attribute("stroke-width"))
        margin = stroke * scale  # the stroke is half outside the box
        assert rect["x"] == pytest.approx(shown["x"] + face.box.x * scale, abs=margin + 1)
        assert rect["y"] == pytest.approx(shown["y"] + face.box.y * scale, abs=margin + 1)
        assert rect["width"] == pytest.approx(face.box.width * scale, abs=2 * margin + 1)
        assert len(group.query_selector_all("circle.landmark")) == 5
        percent = round(100 * face.probabilities[face.expression])
        assert (
            group.query_selector("text.label")
            .text_content()
            .endswith(f"{face.expression} {percent}%")
        )
    # One card per face with the 7 probabilities as bars.
    cards = page.query_selector_all("#faces li.face")
    assert [c.get_attribute("data-expression") for c in cards] == [
        f.expression for f in expected.faces
    ]
    assert all(len(c.query_selector_all(".bar")) == 7 for c in cards)
    assert page.text_content("#summary").startswith("5 face(s) · compact")
    assert page.is_hidden("#error")

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] == 1200
    if os.environ.get("FER_SCREENSHOTS"):
        target = Path(os.environ["FER_SCREENSHOTS"]) / "page.png"
        Image.open(shot).convert("RGB").quantize(colors=192).save(target, optimize=True)


def test_neutral_faces_on_request(page: Any) -> None:
    page.select_option("#model", "derl")
    page.check("#neutral")
    page.set_input_files("#photo", str(DATA / "astronaut.jpg"))
    page.wait_for_selector("#faces li.face img.neutral")
    size = page.eval_on_selector("#faces img.neutral", "e => [e.naturalWidth, e.naturalHeight]")
    assert size == [48, 48]
    page.select_option("#model", "compact")
    assert page.is_disabled("#neutral") and not page.is_checked("#neutral")


def test_frontalize_then_classify_on_request(page: Any, gateway: Gateway) -> None:
    photo = DATA / "multi_face.jpg"
    with Client(gateway.url) as client:
        plain = client.classify(photo)
        turned = client.classify(photo, frontalize=True, frontalize_min_yaw=0)
    assert page.is_visible("#frontalize-option")  # the store has the test frontalizer

    # Off by default: every card says its yaw, none says frontalized.
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("document.querySelectorAll('#faces li.face').length === 5")
    poses = page.query_selector_all("#faces li.face .pose")
    assert [p.text_content() for p in poses] == [f"yaw {round(f.yaw)}°" for f in plain.faces]
    assert all(p.get_attribute("data-frontalized") == "false" for p in poses)

    # On, from 0 degrees: every face's frontal view is classified, as the API answers.
    page.check("#frontalize-faces")
    page.fill("#frontalize-min-yaw", "0")
    page.set_input_files("#photo", str(DATA / "astronaut.jpg"))  # a change event each time
    page.wait_for_function("document.querySelectorAll('#faces li.face').length === 1")
    page.set_input_files("#photo", str(photo))
    page.wait_for_function(
        "document.querySelectorAll('#faces .pose[data-frontalized=true]').length === 5"
    )
    cards = page.query_selector_all("#faces li.face")
    assert [c.get_attribute("data-expression") for c in cards] == [
        f.expression for f in turned.faces
    ]
    assert all(c.query_selector(".pose").text_content().endswith("· frontalized") for c in cards)
    assert page.is_hidden("#error")


def test_error_shows_the_problem(page: Any, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"  # named like an image, but text
    text.write_text("not an image at all")
    page.set_input_files("#photo", str(text))
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error-title") == "Not an image in a supported format"
    assert "not a JPEG, PNG" in page.text_content("#error-detail")


def test_transfer_runs_a_job(page: Any) -> None:
    assert page.is_visible("[data-tab=frontalize]")  # the store has the test frontalizer
    page.click("[data-tab=transfer]")
    assert page.is_hidden("#transfer-missing")
    page.set_input_files("#transfer-form input[name=face]", str(DATA / "astronaut.jpg"))
    page.set_input_files("#transfer-form input[name=expression]", str(DATA / "grace_hopper.jpg"))
    page.click("#transfer-form button[type=submit]")
    page.wait_for_selector("#transfer-job img.generated", timeout=30000)
    size = page.eval_on_selector(
        "#transfer-job img.generated", "e => [e.naturalWidth, e.naturalHeight]"
    )
    assert size == [64, 64]
    assert "succeeded" in page.text_content("#transfer-job .status")


def test_failed_job_shows_its_error(page: Any) -> None:
    page.click("[data-tab=transfer]")
    page.set_input_files("#transfer-form input[name=face]", str(DATA / "astronaut.jpg"))
    page.set_input_files("#transfer-form input[name=expression]", str(DATA / "no_face.jpg"))
    page.click("#transfer-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])", timeout=30000)
    assert page.text_content("#error-title") == "No such face in the image"


def test_webcam_sends_frames_and_stops(page: Any, gateway: Gateway) -> None:
    """Chromium's synthetic camera has no face: the frames go to /classify a few times a
    second and each answer (no faces) is drawn, until the webcam is stopped."""
    frames: list[float] = []
    page.on("request", lambda r: "/classify" in r.url and frames.append(time.monotonic()))
    page.click("#webcam")
    page.wait_for_function("document.getElementById('video').videoWidth > 0")
    page.wait_for_function(
        "/^0 face\\(s\\) · \\d+ ms$/.test(document.getElementById('summary').textContent)"
    )
    assert page.text_content("#webcam") == "Stop webcam"
    assert page.is_hidden("#image") and page.is_visible("#video")
    size = page.eval_on_selector("#overlay", "e => e.getAttribute('viewBox')")
    width, height = page.eval_on_selector("#video", "e => [e.videoWidth, e.videoHeight]")
    assert size == f"0 0 {width} {height}"
    deadline = time.monotonic() + 10
    while len(frames) < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(frames) >= 4, f"{len(frames)} frames sent in 10 s"
    rate = (len(frames) - 1) / (frames[-1] - frames[0])
    assert 1 < rate <= 4.5, f"{rate:.1f} frames a second"
    page.click("#webcam")
    assert page.text_content("#webcam") == "Webcam"
    assert page.eval_on_selector("#video", "e => e.srcObject") is None
