"""Reading and driving the web demo's Gradio 6 page from Playwright, as a person would.

Used by the ``tests/test_ui_*browser.py`` modules. Everything goes through the page's agreed
``elem_id`` values (``#model-choice``, ``#detections-table``, ...) and what the browser
renders; nothing reaches into the app's Python objects.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

# Debian's chromium (scripts/setup.sh installs it); Playwright's own browser download
# does not work on the machines this project targets.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOAD_TIMEOUT_MS = 60_000  # a page (or its login form) loads, and the server answers
ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui"
# Tall enough that the gallery is on screen: its thumbnails load lazily.
VIEWPORT = {"width": 1400, "height": 1400}
RESULT_TIMEOUT_MS = 30_000

# The components that one Detect click updates; their status trackers say when it is done.
OUTPUT_IDS = ("annotated-gallery", "detections-table", "timings-table", "message")


def launch_chromium(playwright: Playwright, extra_args: Sequence[str] = ()) -> Browser:
    """Debian's Chromium, headless, with ``CHROMIUM_ARGS`` and ``extra_args``."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium. "
            "Run `make setup` (it apt-installs chromium).",
            pytrace=False,
        )
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args]
    )


@contextlib.contextmanager
def serving_page(grpc_url: str) -> Iterator[str]:
    """The page for the Triton at ``grpc_url``, served as ``python -m ui`` serves it
    (``launch_ui``): one shared client, ``LAUNCH_OPTIONS``, a free local port."""
    from client import DetectorClient
    from ensemble.processes import free_port
    from ui.app import LAUNCH_OPTIONS, build_app

    port = free_port()
    with DetectorClient(grpc_url) as client:
        demo = build_app(client)
        demo.launch(
            **LAUNCH_OPTIONS,
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=port,
            quiet=True,
        )
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@contextlib.contextmanager
def fresh_browser(shots: Path) -> Iterator[BrowserContext]:
    """A headless Chromium profile for one test module; the module's old screenshots in
    ``shots`` are removed first, so that the folder shows only this run."""
    for old in shots.glob("*.png"):
        old.unlink()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport=VIEWPORT)
        yield context
        context.close()
        browser.close()


@contextlib.contextmanager
def loaded_page(context: BrowserContext, url: str, request, ready: str) -> Iterator[Page]:
    """A new page on ``url`` once its status line reads ``ready``; closed afterwards,
    with a screenshot when the test (``request``, pytest's) failed."""
    page = context.new_page()
    failed_before = request.session.testsfailed
    page.goto(url)
    expect(page.locator("#status-line")).to_contain_text(ready, timeout=LOAD_TIMEOUT_MS)
    yield page
    if request.session.testsfailed > failed_before:
        save_screenshot(page, f"failed-{request.node.name}")
    page.close()


def save_screenshot(page: Page, name: str) -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / (re.sub(r"[^\w.-]+", "_", name) + ".png")
    # Gradio fades outputs while a request runs; "disabled" finishes that fade-in.
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


# --- inputs -------------------------------------------------------------------------


def upload(page: Page, path: Path, elem_id: str = "input-image") -> None:
    """Put a file into an upload component through its hidden ``<input type=file>``."""
    page.locator(f"#{elem_id} input[type=file]").set_input_files(path)


def choose_model(page: Page, label: str) -> None:
    radio = page.locator("#model-choice").get_by_label(label, exact=True)
    radio.check()
    expect(radio).to_be_checked()


def model_choices(page: Page) -> list[str]:
    """The labels of the model radio's options, in the order the page shows them."""
    return page.locator("#model-choice input[type=radio]").evaluate_all(
        "inputs => inputs.map(i => (i.closest('label') ?? i.parentElement).innerText.trim())"
    )


def slider_value(page: Page, elem_id: str) -> float:
    return float(page.locator(f"#{elem_id} input[type=range]").input_value())


def set_slider(page: Page, elem_id: str, value: float) -> None:
    """Type into the number box of a Gradio slider; the range handle follows it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(str(value))


# --- outputs ------------------------------------------------------------------------

# A fingerprint of everything a Detect click can change, compared before and after it.
_SIGNATURE_JS = """ids => JSON.stringify(ids.map(id => {
    const el = document.getElementById(id);
    if (!el) return null;
    // The gallery's images are data: URLs; their length and tail tell them apart.
    const images = [...el.querySelectorAll('img')].map(i => i.src.length + i.src.slice(-64));
    return [el.innerText, images];
}))"""

# Done = every output's status tracker is hidden, or shows Gradio's own "Error" badge.
_IDLE_JS = """ids => ids.every(id => {
    const el = document.getElementById(id);
    if (!el) return true;
    return [...el.querySelectorAll('[data-testid=status-tracker]')].every(
        t => t.classList.contains('hide') || /error/i.test(t.innerText));
})"""


def outputs_signature(page: Page) -> str:
    return page.evaluate(_SIGNATURE_JS, list(OUTPUT_IDS))


def click_detect(page: Page, before: str | None = None) -> None:
    """Click Detect and wait until the outputs have changed and nothing is pending.

    ``before`` is the outputs' signature taken before the step's first change (a model
    choice or a slider may start a run by themselves); by default, just before the click.
    """
    if before is None:
        before = outputs_signature(page)
    page.locator("#detect-button").click()
    wait_for_new_results(page, before, "clicking Detect")


def wait_for_new_results(page: Page, before: str, after_what: str) -> None:
    """Wait until the outputs differ from the signature ``before`` and nothing is pending."""
    try:
        page.wait_for_function(
            f"([ids, before]) => ({_SIGNATURE_JS})(ids) !== before && ({_IDLE_JS})(ids)",
            arg=[list(OUTPUT_IDS), before],
            timeout=RESULT_TIMEOUT_MS,
        )
    except PlaywrightTimeout:
        message = page.locator("#message").inner_text()
        raise AssertionError(
            f"no new results {RESULT_TIMEOUT_MS / 1000:.0f} s after {after_what} "
            f"(the message says {message!r})"
        ) from None


def gradio_error_badges(page: Page) -> list[str]:
    """Outputs showing Gradio's generic "Error" badge (an exception in the handler)."""
    return page.evaluate(
        """ids => ids.filter(id => {
            const el = document.getElementById(id);
            return el && [...el.querySelectorAll('[data-testid=status-tracker]')].some(
                t => !t.classList.contains('hide') && /error/i.test(t.innerText));
        })""",
        list(OUTPUT_IDS),
    )


def gallery_captions(page: Page) -> list[str]:
    return page.locator("#annotated-gallery .thumbnail-item img").evaluate_all(
        "images => images.map(img => img.alt)"
    )


def expect_gallery_loaded(page: Page, count: int) -> None:
    """Exactly ``count`` thumbnails, each an image the browser decoded."""
    gallery = page.locator("#annotated-gallery")
    gallery.scroll_into_view_if_needed()
    thumbnails = gallery.locator(".thumbnail-item img")
    expect(thumbnails, "annotated images in the gallery").to_have_count(count)
    # ``complete`` turns true when an image has loaded or failed to; a failed one has
    # no natural size.
    thumbnails.evaluate_all(
        """(images, timeout) => Promise.race([
            Promise.all(images.map(img => img.complete || new Promise(done => {
                img.addEventListener('load', done);
                img.addEventListener('error', done);
            }))),
            new Promise(done => setTimeout(done, timeout)),
        ])""",
        RESULT_TIMEOUT_MS,
    )
    broken = thumbnails.evaluate_all(
        """images => images.filter(img => !(img.complete && img.naturalWidth > 0))
            .map(img => `${img.alt || 'no caption'}: ${img.src.slice(0, 60)}...`)"""
    )
    assert not broken, f"gallery images that do not load: {broken}"


# Gradio 6's Dataframe renders its body as a virtual list: only the rows in view exist
# in the DOM. This scrolls through it and collects every row by its index.
_READ_TABLE_JS = """async grid => {
    const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const headers = [...grid.querySelectorAll('thead [role=columnheader]')].map(
        th => (th.getAttribute('title') ?? th.innerText).trim());
    const total = Number(grid.getAttribute('aria-rowcount')) - 1;  // minus the header row
    const viewport = grid.querySelector('.virtual-table-viewport') ?? grid;
    const rows = new Map();
    const collect = () => grid.querySelectorAll('[role=row][data-index]').forEach(row => {
        rows.set(Number(row.dataset.index),
                 [...row.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()));
    });
    viewport.scrollTop = 0;
    await frame();
    collect();
    for (let i = 0; rows.size < total && i < 500; i++) {
        const top = viewport.scrollTop;
        viewport.scrollTop = top + Math.max(viewport.clientHeight / 2, 20);
        await frame();
        collect();
        if (viewport.scrollTop === top) break;  // at the bottom
    }
    viewport.scrollTop = 0;
    return {headers, total, rows: [...rows.entries()].sort((a, b) => a[0] - b[0]).map(e => e[1])};
}"""


def read_table(page: Page, elem_id: str) -> tuple[list[str], list[dict[str, str]]]:
    """A Dataframe's headers and all of its rows (as dicts header -> cell text)."""
    grid = page.locator(f"#{elem_id} [role=grid]")
    table = grid.evaluate(_READ_TABLE_JS)
    headers = table["headers"]
    assert len(table["rows"]) == table["total"], (
        f"#{elem_id}: read {len(table['rows'])} of {table['total']} rows"
    )
    return headers, [dict(zip(headers, row, strict=True)) for row in table["rows"]]


def number(text: str) -> float:
    """A table cell as a number; fails the test naming the cell when it is not one."""
    try:
        return float(text.replace(",", ""))
    except ValueError:
        pytest.fail(f"expected a number in a table cell, got {text!r}", pytrace=False)


# --- the video clip tab ---------------------------------------------------------------

CLIP_TIMEOUT_MS = 300_000  # 12 frames through every detector on a loaded 2-core machine


def run_clip(page: Page, clip: Path, while_running: Callable[[Page], None] | None = None) -> str:
    """Upload ``clip`` on the Video clip tab, click its button, wait for its message;
    returns it. ``while_running`` is called once the button is clicked (a screenshot
    of the progress bar, say)."""
    message = page.locator("#clip-message")
    before = message.inner_text()
    page.locator("#input-clip input[type=file]").set_input_files(clip)
    # The upload is done when the input lists it, with a link to the uploaded file.
    uploaded = page.locator(f'#input-clip a[href$="/{clip.name}"]')
    expect(uploaded).to_have_count(1, timeout=60_000)
    page.locator("#clip-button").click()
    if while_running is not None:
        while_running(page)
    page.wait_for_function(
        """([before]) => {
            const el = document.getElementById('clip-message');
            const busy = [...document.querySelectorAll(
                '#clip-message [data-testid=status-tracker], '
                + '#annotated-clip [data-testid=status-tracker]')]
                .some(t => !t.classList.contains('hide'));
            return el && el.innerText.trim() && el.innerText !== before && !busy;
        }""",
        arg=[before],
        timeout=CLIP_TIMEOUT_MS,
    )
    return message.inner_text()


def download_links(page: Page) -> dict[str, str]:
    """File name -> URL of each link in the clip tab's downloads list."""
    links = page.locator("#clip-downloads a[href]")
    expect(links.first).to_be_attached(timeout=30_000)
    return {
        unquote(urlparse(href).path).rsplit("/", 1)[-1]: href
        for href in links.evaluate_all("links => links.map(a => a.href)")
    }


def fetch(page: Page, url: str, to: Path) -> Path:
    """The file at ``url``, fetched with the page's own session, written to ``to``."""
    response = page.request.get(url)
    assert response.ok, (url, response.status)
    to.write_bytes(response.body())
    return to


# --- the webcam tab ------------------------------------------------------------------

# Chromium's fake camera: granted, it plays the Y4M FILE given with
# --use-file-for-fake-video-capture=FILE in a loop; refused, the page is told so.
FAKE_CAMERA = ("--use-fake-device-for-media-stream",)
GRANTED = (*FAKE_CAMERA, "--use-fake-ui-for-media-stream")
REFUSED = (*FAKE_CAMERA, "--deny-permission-prompts")
# A stream is a few seconds long here; the machine is small and shared.
STREAM_TIMEOUT_MS = 120_000


@contextlib.contextmanager
def camera_page(url: str, request, *camera_args: str) -> Iterator[Page]:
    """The page in a Chromium of its own (the camera is decided at launch), launched with
    ``camera_args``, on the Webcam tab; a screenshot named for the test when it failed."""
    failed_before = request.session.testsfailed
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, camera_args)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(url)
            expect(page.locator("#status-line")).to_contain_text("up", timeout=LOAD_TIMEOUT_MS)
            page.get_by_role("tab", name="Webcam").click()
            expect(page.locator("#webcam-input")).to_be_visible()
            yield page
            if request.session.testsfailed > failed_before:
                save_screenshot(page, f"failed-{request.node.name}")
        finally:
            browser.close()


def ask_for_camera(page: Page) -> None:
    """Click Gradio's "Click to Access Webcam" box, as a person does first."""
    page.locator("#webcam-input").get_by_text(re.compile("access webcam", re.I)).click()


def markdown_text(page: Page, elem_id: str) -> str:
    """A Markdown component's text (without its status tracker's timer)."""
    return page.locator(f"#{elem_id} [data-testid=markdown]").inner_text().strip()


def wait_for_frames(page: Page, count: int) -> None:
    """Until the webcam's stats line says at least ``count`` frames were shown."""
    page.wait_for_function(
        """count => {
            const m = document.getElementById('webcam-stats')?.innerText.match(/(\\d+) shown/);
            return m && Number(m[1]) >= count;
        }""",
        arg=count,
        timeout=STREAM_TIMEOUT_MS,
    )
