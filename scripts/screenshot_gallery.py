"""Screenshot a built gallery page (OUT/index.html) in headless Chromium, e.g. for the README.

    .venv/bin/python -m scripts.screenshot_gallery results/demo/index.html benchmarks/results/gallery.png

Needs the dev extra (playwright, the Python driver only: no browser download) and a Chromium executable
(Debian: `apt-get install chromium`, which scripts/setup.sh installs). Videos are paused on a frame
(seeked to 1 s and decoded) so the picture shows rollouts rather than black boxes.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SEEK_VIDEOS = """async () => {
  const vids = Array.from(document.querySelectorAll('video'));
  const decoded = v => new Promise(done => {
    const poll = () => (v.readyState >= 2 ? done() : setTimeout(poll, 50));
    poll();
  });
  await Promise.all(vids.map(v => new Promise(done => {
    const seek = () => { v.currentTime = Math.min(1.0, (v.duration || 2) / 2); };
    v.addEventListener('seeked', () => decoded(v).then(done), {once: true});
    if (v.readyState >= 1) seek(); else v.addEventListener('loadedmetadata', seek, {once: true});
    setTimeout(done, 5000);
  })));
}"""


@dataclasses.dataclass
class ScreenshotConfig:
    """Render a gallery page to a PNG."""

    page: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PAGE")]
    """The gallery's index.html (built by `vla gallery OUT`)."""
    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PNG")]
    """PNG to write (parent folders are created)."""
    width: int = 1280
    """Viewport width in CSS pixels."""
    height: int = 900
    """Viewport height in CSS pixels (the screenshot is the viewport, not the full page)."""
    chromium: Path = Path("/usr/bin/chromium")
    """Chromium executable."""

    def __post_init__(self) -> None:
        if not self.page.is_file():
            raise FileNotFoundError(f"gallery page {self.page} not found (build it with `vla gallery OUT`)")
        if not self.chromium.is_file():
            raise FileNotFoundError(f"Chromium executable {self.chromium} not found (Debian: apt-get install chromium)")
        if self.width < 200 or self.height < 200:
            raise ValueError(f"viewport must be at least 200 x 200, got {self.width} x {self.height}")


def main(cfg: ScreenshotConfig) -> int:
    """Open the page, seek every video to a frame, save the viewport as PNG; returns 0."""
    from playwright.sync_api import sync_playwright

    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(cfg.chromium), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": cfg.width, "height": cfg.height})
        page.goto(cfg.page.resolve().as_uri())
        page.wait_for_load_state("load")
        page.evaluate(SEEK_VIDEOS)
        page.wait_for_timeout(1000)  # let the media controls drop their loading spinner
        page.screenshot(path=str(cfg.out))
        browser.close()
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ScreenshotConfig)))
