"""scripts/screenshot_gallery.py: bad arguments fail with a clear message before a browser starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.screenshot_gallery import ScreenshotConfig


def _page(tmp_path: Path) -> Path:
    page = tmp_path / "index.html"
    page.write_text("<html></html>")
    return page


def test_missing_page(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gallery page .*nope.html not found"):
        ScreenshotConfig(page=tmp_path / "nope.html", out=tmp_path / "s.png", chromium=_page(tmp_path))


def test_missing_chromium(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Chromium executable .*no-chromium not found"):
        ScreenshotConfig(page=_page(tmp_path), out=tmp_path / "s.png", chromium=tmp_path / "no-chromium")


def test_tiny_viewport(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="viewport must be at least 200 x 200, got 100 x 900"):
        ScreenshotConfig(page=_page(tmp_path), out=tmp_path / "s.png", width=100, chromium=_page(tmp_path))
    assert not (tmp_path / "s.png").exists()
