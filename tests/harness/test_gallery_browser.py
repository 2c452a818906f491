"""The gallery in a real browser: Debian's Chromium driven headless by playwright, page served over http (and
opened from file://). Checks: loads without console errors, table numbers, task/outcome filters hide the other
cards, every video has a source URL answering 200 whose metadata loads (duration > 0), and one video plays.

Skipped with the reason when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import functools
import http.server
import sys
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gallery_fixtures import episode_record, video_name, write_run, write_video

from harness.gallery import build_comparison_gallery, build_gallery

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
H264 = 'video/mp4; codecs="avc1.42E01E"'
VP9_MP4 = 'video/mp4; codecs="vp09.00.10.08"'
NASTY = 'stack the <b>red</b> cube & say "done"'
ALL_VIDEOS_READY = """() => Array.from(document.querySelectorAll('video')).every(
    v => v.readyState >= 1 && v.duration > 0)"""

# (task, seed, outcome) of run A and run B; error episodes have no video (placeholder).
RUN_A = [
    ("pick", 0, "success"),
    ("pick", 1, "success"),
    ("pick", 2, "failure"),
    ("pick", 3, "error"),
    ("stack", 0, "success"),
    ("stack", 1, "failure"),
]
RUN_B = [
    ("pick", 1, "failure"),
    ("pick", 2, "success"),
    ("pick", 3, "failure"),
    ("pick", 4, "success"),
    ("stack", 0, "success"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A persistent Chromium context on a new empty user data dir."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def video_codec(browser: Any) -> str:
    """libx264 (what the harness writes) when this Chromium plays H.264; else VP9 in mp4, with a warning."""
    page = browser.new_page()
    page.set_content("<video></video>")
    support = {t: page.evaluate("t => document.querySelector('video').canPlayType(t)", t) for t in (H264, VP9_MP4)}
    page.close()
    if support[H264]:
        return "libx264"
    if not support[VP9_MP4]:
        pytest.fail(f"this Chromium plays neither H.264 nor VP9 in mp4: {support}")
    warnings.warn(
        f"this Chromium cannot play H.264 ({support}): the harness's libx264 videos will not play in "
        f"it; testing with VP9 in mp4 instead",
        stacklevel=1,
    )
    return "libvpx-vp9"


def _write(run_dir: Path, episodes: list[tuple[str, int, str]], policy: str, codec: str) -> Path:
    records = []
    for task, seed, outcome in episodes:
        video = None if outcome == "error" else video_name(task, seed, outcome)
        if video:
            write_video(run_dir / video, n_frames=6, codec=codec)
        instruction = NASTY if (task, seed) == ("stack", 1) else None
        records.append(episode_record(task, seed, outcome, video=video, instruction=instruction, episode_len=10 + seed))
    return write_run(run_dir, records, policy=policy)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, video_codec: str) -> Path:
    """site/A (alpha) and site/B (beta) run folders with real videos, A/index.html and A/compare.html."""
    root = tmp_path_factory.mktemp("site")
    run_a = _write(root / "A", RUN_A, "alpha", video_codec)
    run_b = _write(root / "B", RUN_B, "beta", video_codec)
    build_gallery(run_a)
    build_comparison_gallery(run_a, run_b)
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # browser aborted a fetch
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    """Base URL of a local static http server over ``site`` (127.0.0.1, random port)."""
    httpd = _Server(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _open(browser: Any, url: str) -> tuple[Any, list[str]]:
    """New page at ``url``; returns it and the live list of console errors / uncaught exceptions."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.goto(url, wait_until="load")
    return page, errors


def _visible_cards(page: Any) -> int:
    return page.locator("article.card:visible").count()


def _filter(page: Any, task: str, outcome: str) -> int:
    page.select_option("#filter-task", task)
    page.select_option("#filter-outcome", outcome)
    return _visible_cards(page)


def _check_videos(page: Any, base_url: str | None) -> list[str]:
    """Wait until every video has metadata; check each source URL answers 200 with an mp4; return the URLs."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    describe = """() => Array.from(document.querySelectorAll('video')).map(v => ({
        src: v.currentSrc, type: v.querySelector('source').type, ready: v.readyState, duration: v.duration,
        error: v.error && v.error.code}))"""
    try:
        page.wait_for_function(ALL_VIDEOS_READY, timeout=20_000)
    except PlaywrightTimeout:
        pytest.fail(f"video metadata did not load within 20 s: {page.evaluate(describe)}")
    videos = page.evaluate(describe)
    assert videos, "no video element on the page"
    for video in videos:
        assert video["type"] == "video/mp4" and video["error"] is None, video
        assert video["ready"] >= 1 and video["duration"] > 0, video
        if base_url is not None:
            assert video["src"].startswith(base_url), video
            with urllib.request.urlopen(video["src"], timeout=10) as response:
                assert response.status == 200, video
                assert response.read(12)[4:8] == b"ftyp", f"{video['src']} is not an mp4"
    return [v["src"] for v in videos]


def test_gallery_over_http(browser: Any, server: str) -> None:
    page, errors = _open(browser, f"{server}/A/index.html")
    assert page.title() == "VLA gallery: alpha (2025-03-04 05:06:07)"
    cell = "table.summary tr[data-task='{}'] td[data-col='{}']"
    assert page.inner_text(cell.format("pick", "episodes")) == "3"
    assert page.inner_text(cell.format("pick", "successes")) == "2"
    assert page.inner_text(cell.format("pick", "success_rate")) == "66.7 %"
    assert page.inner_text(cell.format("pick", "errors")) == "1"
    assert page.inner_text("table.summary tr.overall td[data-col='successes']") == "3"
    assert page.inner_text(".card[data-task='stack'][data-seed='1'] .instruction") == NASTY
    assert _visible_cards(page) == len(RUN_A)
    assert page.inner_text("#visible-count") == f"{len(RUN_A)} of {len(RUN_A)} shown"

    assert _filter(page, "stack", "all") == 2
    assert page.locator("article.card[data-task='pick']:visible").count() == 0
    assert _filter(page, "stack", "failure") == 1
    assert _filter(page, "all", "failure") == 2
    assert _filter(page, "pick", "error") == 1
    assert page.locator(".card[data-outcome='error'] .placeholder:visible").count() == 1
    assert _filter(page, "all", "timeout") == 0
    assert page.locator("#episodes .empty").is_visible()
    assert page.url.endswith("#task=all&outcome=timeout")
    assert _filter(page, "all", "all") == len(RUN_A)

    srcs = _check_videos(page, server)
    assert len(srcs) == 5  # the error episode has none
    page.evaluate("() => document.querySelector('video').play()")  # muted: autoplay is allowed
    page.wait_for_function("() => document.querySelector('video').currentTime > 0", timeout=20_000)
    assert page.evaluate("() => document.querySelector('video').videoWidth") == 72
    assert errors == [], errors
    page.close()


def test_gallery_from_file_url(browser: Any, site: Path) -> None:
    page, errors = _open(browser, (site / "A" / "index.html").as_uri() + "#task=stack&outcome=all")
    assert _visible_cards(page) == 2, "filter state restored from the URL fragment"
    assert page.input_value("#filter-task") == "stack"
    _check_videos(page, None)
    assert errors == [], errors
    page.close()


def test_comparison_page_over_http(browser: Any, server: str) -> None:
    page, errors = _open(browser, f"{server}/A/compare.html")
    assert "alpha" in page.title() and "beta" in page.title()
    pairs = page.locator("div.pair")
    assert pairs.count() == 4  # pick 1-3 and stack 0
    for i in range(4):
        sides = pairs.nth(i).locator("article.card").evaluate_all("cs => cs.map(c => c.dataset.side)")
        assert sides == ["A", "B"]
    assert page.locator(".unpaired").count() == 3  # pick 0, stack 1 (A); pick 4 (B)
    assert page.inner_text("#only-b .badge-unpaired") == "unpaired: only in run B"
    page.select_option("#filter-outcome", "discordant")
    assert page.locator("div.pair:visible").count() == 3
    assert page.locator(".unpaired:visible").count() == 0
    page.select_option("#filter-outcome", "error")
    assert page.locator("div.pair:visible").count() == 1
    page.select_option("#filter-outcome", "all")
    page.select_option("#filter-task", "stack")
    assert _visible_cards(page) == 3  # the stack pair + stack 1 only in A
    page.select_option("#filter-task", "all")
    srcs = _check_videos(page, server)
    assert any("/B/videos/" in src for src in srcs) and any("/A/videos/" in src for src in srcs)
    assert errors == [], errors
    page.close()
