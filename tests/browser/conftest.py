"""Browser fixtures: real headless chromium processes, closed (by pid) after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from .cdp import Browser

LaunchBrowser = Callable[[], Awaitable[Browser]]


@pytest.fixture()
async def launch_browser() -> AsyncIterator[LaunchBrowser]:
    """``await launch_browser()`` starts one more chromium (a "device"); all are closed."""
    browsers: list[Browser] = []

    async def launch() -> Browser:
        try:
            browser = await Browser.launch()
        except FileNotFoundError as e:
            pytest.fail(str(e))
        browsers.append(browser)
        return browser

    try:
        yield launch
    finally:
        for browser in browsers:
            await browser.close()


@pytest.fixture()
async def browser(launch_browser: LaunchBrowser) -> Browser:
    return await launch_browser()
