"""report.html: every section present, self-contained, escaped; renders in headless Chromium without errors."""
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mobilemed.cli.main import main
from mobilemed.errors import MobilemedError
from mobilemed.evaluation.report import SECTIONS, write_report

from .conftest import make_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


class Outline(HTMLParser):
    """Section ids, image sources and every tag name of a page."""

    def __init__(self):
        super().__init__()
        self.ids, self.images, self.tags, self.links = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.ids.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "link":
            self.links.append(attrs.get("href", ""))


def outline(path: Path) -> tuple[Outline, str]:
    text = path.read_text(encoding="utf-8")
    parser = Outline()
    parser.feed(text)
    return parser, text


def test_report_has_every_section_and_is_self_contained(binary_run):
    path = write_report(binary_run)
    assert path == binary_run / "report.html"
    page, text = outline(path)
    assert page.ids == list(SECTIONS)
    assert "script" not in page.tags                       # nothing to run, nothing to fail
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert len(page.images) == 5 + 8                        # 5 plots + 8 gallery overlays
    assert all(href.startswith("data:") for href in page.links)
    assert "http://" not in text and "https://" not in text
    # user strings are escaped: a config value and gallery file names cannot inject markup
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)" in text
    assert "<b>img</b>" not in text
    # the numbers a reader looks for
    metrics = json.loads((binary_run / "metrics.json").read_text())["test"]
    assert f"{metrics['auroc_macro']['value']:.3f}" in text
    assert "4708" in text and "624" in text                 # split sizes from split.csv
    assert {p.name for p in (binary_run / "plots").iterdir()} == {
        "training_curves.png", "roc.png", "pr.png", "confusion.png", "reliability.png"}


def test_report_without_optional_pieces(tmp_path):
    run = make_run(tmp_path / "bare", gallery=False, history=False)
    for name in ("split.csv", "config.yaml", "versions.json", "metrics.json"):
        (run / name).unlink()
    path = write_report(run, tmp_path / "elsewhere" / "out.html", save_plots=False)
    page, text = outline(path)
    assert page.ids == list(SECTIONS)
    assert "No history.json" in text and "No Grad-CAM gallery" in text and "No split.csv" in text
    assert not (run / "plots").exists() and not (run / "report.html").exists()
    # metrics were recomputed from the saved predictions
    assert "AUROC" in text and "n/a" not in text.split('id="metrics"')[1].split("</table>")[0]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_report_for_other_tasks(tmp_path, task):
    run = make_run(tmp_path / task, task=task)
    page, text = outline(write_report(run))
    assert page.ids == list(SECTIONS)
    if task == "multilabel":
        assert "Hernia (positive)" in text        # class counts per split from split.csv
        assert "Pleural_Thickening" in text and "patients / groups" in text


def test_not_a_run_folder_is_a_user_error(tmp_path):
    with pytest.raises(MobilemedError, match="does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MobilemedError, match="finished run folder"):
        write_report(tmp_path / "empty")


def test_report_command(binary_run, capsys, restore_logging):
    assert main(["report", str(binary_run), "--out", str(binary_run / "r.html")]) == 0
    assert (binary_run / "r.html").is_file() and "r.html" in capsys.readouterr().out
    assert main(["report", str(binary_run / "nope")]) == 2


def require_browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian's chromium package runs this test)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def check_in_chromium(sync_api, path: Path, screenshot: Path) -> None:
    """Open the page in Debian's chromium: no console errors, no failed or outside requests, every
    section visible with a heading, every image decoded, nothing wider than the window; screenshot it."""
    errors, requests = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            for section in SECTIONS:
                assert page.locator(f"section#{section}").is_visible(), section
                assert page.locator(f"section#{section} h2").inner_text().strip(), section
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert screenshot.stat().st_size > 50_000


def test_report_renders_in_headless_chromium(binary_run, tmp_path):
    sync_api = require_browser()
    check_in_chromium(sync_api, write_report(binary_run), tmp_path / "report.png")


@pytest.mark.slow
def test_pneumoniamnist_run_report_renders(imagenet_cache, tmp_path, restore_logging):
    """The acceptance check: a real (short) run on the official PneumoniaMNIST split, its report in Chromium."""
    sync_api = require_browser()
    run = tmp_path / "pneumoniamnist-run"
    assert main(["--quiet", "train", "pneumoniamnist", "--mode", "linear-probe", "--epochs", "2", "--out", str(run),
                 "--n-bootstrap", "200"]) == 0
    page, text = outline(run / "report.html")
    assert page.ids == list(SECTIONS)
    for count in ("4708", "524", "624"):  # the official split sizes, from split.csv
        assert f"<td>{count}</td>" in text
    check_in_chromium(sync_api, run / "report.html", tmp_path / "pneumoniamnist-report.png")
