"""The upload page in Debian's chromium: a PNG and a DICOM uploaded through the page show the decision, the
threshold and the Grad-CAM overlay; bad files are refused with 4xx JSON while the service keeps answering."""
from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.evaluation.test_report import CHROMIUM, CHROMIUM_ARGS, require_browser


@pytest.fixture(scope="module")
def live_service(served_run):
    """The real app under uvicorn on a free loopback port, in a thread; stopped after the module."""
    import uvicorn

    from mobilemed.service.app import create_app

    checkpoint, _ = served_run
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(checkpoint), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def upload_through_page(sync_api, url: str, file: Path, screenshot: Path) -> dict:
    errors = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: None if request.url.startswith((url, "data:", "blob:"))
                    else errors.append(f"outside request: {request.url}"))
            page.goto(url, wait_until="networkidle")
            assert "Test AUROC" in page.locator("#about").inner_text()
            page.set_input_files("#file", str(file))
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            shown = {"decision": page.locator("#decision").inner_text(),
                     "operating": page.locator("#operating").inner_text(),
                     "edge": page.locator("#edge").inner_text(),
                     "overlay_ok": page.evaluate("(() => { const i = document.getElementById('overlay');"
                                                 " return i.complete && i.naturalWidth > 0; })()")}
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    return shown


def test_png_and_dicom_uploads_show_decision_threshold_and_overlay(live_service, served_run, dicom_path, tmp_path):
    sync_api = require_browser()
    _, data = served_run
    png = next((data / "test" / "pneumonia").glob("*.png"))
    for file in (png, Path(dicom_path)):
        expected = httpx.post(f"{live_service}/v1/predict?explain=1", files={"file": (file.name, file.read_bytes())},
                              timeout=60).json()
        shown = upload_through_page(sync_api, live_service, file, tmp_path / f"{file.stem}.png")
        assert shown["decision"] == f"Decision: {expected['decision']}"
        assert f"{expected['thresholds'][0]:.3f}" in shown["operating"] and "pneumonia" in shown["operating"]
        assert shown["overlay_ok"]
        percent = math.floor(expected["gradcam_edge_heat"] * 100 + 0.5)  # JavaScript's Math.round
        assert shown["edge"].startswith(f"{percent}% of the heat on the image's edge"), shown["edge"]


def test_bad_files_get_4xx_json_and_the_service_keeps_answering(live_service, bad_uploads):
    for name, (filename, content, status) in bad_uploads.items():
        response = httpx.post(f"{live_service}/v1/predict", files={"file": (filename, content)}, timeout=60)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"].startswith("application/json") and response.json()["error"]
        assert httpx.get(f"{live_service}/healthz").status_code == 200
