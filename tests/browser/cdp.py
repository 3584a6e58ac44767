"""A small Chrome DevTools Protocol driver for Debian's ``chromium``, over aiohttp.

Nothing is downloaded: it starts the system browser headless on a fresh profile in a
temporary directory, with ``--remote-debugging-port=0`` (the browser picks a free loopback
port and writes it to ``DevToolsActivePort``), and talks CDP over one WebSocket with
flattened target sessions. Only the browser process it started (and that process's own
group, which holds its helpers) is ever signalled, by id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp

from tests.support import stop_process

CHROMIUM = "/usr/bin/chromium"

# What headless WebRTC on one machine needs: fake capture devices accepted without a
# prompt, loopback allowed as an ICE candidate, and real host addresses instead of mDNS
# names (nothing resolves .local names here). No STUN/TURN: host candidates suffice.
FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--auto-accept-this-tab-capture",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter",
    # Background tabs must keep their timers and WebRTC running at full speed.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1280,800",
)


START_SECONDS = 30.0  # for the browser to write its DevTools port
COMMAND_SECONDS = 30.0  # for one CDP command's reply
LOAD_SECONDS = 15.0  # for a navigation to complete


class CDPError(RuntimeError):
    """A CDP command failed, or the page threw while evaluating an expression."""


class Timeout(AssertionError):
    """A bounded wait on page state ran out (an AssertionError, so it fails the test)."""


@dataclass
class Browser:
    """One headless chromium process and the CDP connection to it."""

    proc: subprocess.Popen[bytes]
    profile: Path
    http: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    pages: list[Page] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def launch(cls, extra_args: Sequence[str] = (), executable: str = CHROMIUM) -> Browser:
        proc, profile, ws_url = await asyncio.to_thread(_start, executable, extra_args)
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(ws_url, max_msg_size=0)
        except BaseException:
            await http.close()
            await asyncio.to_thread(stop_process, proc, 10, group=True)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        browser = cls(proc, profile, http, ws)
        browser._reader = asyncio.create_task(browser._read())
        return browser

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.profile / "browser.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        frame: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            frame["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            async with asyncio.timeout(COMMAND_SECONDS):
                await self.ws.send_str(json.dumps(frame))
                reply = await fut
        finally:
            self._pending.pop(msg_id, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return cast(dict[str, Any], reply.get("result", {}))

    async def new_page(self, url: str) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        self.pages.append(page)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.goto(url)
        return page

    async def close(self) -> None:
        """Close the browser: politely over CDP, then by signal to its own process group."""
        if self.proc.poll() is None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.send("Browser.close")
        await asyncio.to_thread(stop_process, self.proc, 10, group=True)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self.ws.close()
        await self.http.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.get(data["id"])
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            page = next((p for p in self.pages if p.session == data.get("sessionId")), None)
            if page is not None:
                page.on_event(data["method"], data.get("params", {}))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CDPError("the browser closed the DevTools connection"))


@dataclass
class Page:
    """One tab, attached as a flattened CDP session."""

    browser: Browser
    target: str
    session: str
    console: list[str] = field(default_factory=list)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"uncaught: {text}")
        del self.console[:-200]

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'", f"{url} to load", LOAD_SECONDS)

    async def evaluate(self, expression: str, user_gesture: bool = False) -> Any:
        """Evaluate in the page (awaiting promises); return the JSON value.

        ``user_gesture``: run as if the user clicked (``getDisplayMedia`` needs that).
        """
        reply = await self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "returnByValue": True,
                "awaitPromise": True,
                "userGesture": user_gesture,
            },
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression!r} threw: {text}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, what: str, within: float, every: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy, for at most ``within`` seconds; return it."""
        value: Any = None
        try:
            async with asyncio.timeout(within):
                while True:  # the state lives in the page: polling is the only way to see it
                    value = await self.evaluate(expression)
                    if value:
                        return value
                    await asyncio.sleep(every)
        except TimeoutError:
            raise Timeout(
                f"timed out after {within}s waiting for {what} ({expression!r} = {value!r});"
                f" page console: {self.console[-20:]}"
            ) from None

    async def screenshot(self, path: Path) -> Path:
        reply = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(reply["data"]))
        return path


def _start(executable: str, extra_args: Sequence[str]) -> tuple[subprocess.Popen[bytes], Path, str]:
    """Start chromium on a fresh profile; wait (bounded) for its DevTools URL."""
    if not (os.path.exists(executable) or shutil.which(executable)):
        raise FileNotFoundError(
            f"{executable} is missing: run `make deps` (installs Debian's chromium)"
        )
    profile = Path(tempfile.mkdtemp(prefix="rw-chromium-"))
    args = [
        executable,
        *FLAGS,
        f"--user-data-dir={profile / 'data'}",
        "--remote-debugging-port=0",
        *extra_args,
        "about:blank",
    ]
    with open(profile / "browser.log", "wb") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    port_file = profile / "data" / "DevToolsActivePort"
    deadline = time.monotonic() + START_SECONDS
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log_text = (profile / "browser.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"chromium exited with {proc.returncode}: {log_text}")
            with contextlib.suppress(OSError, ValueError):
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    return proc, profile, f"ws://127.0.0.1:{int(lines[0])}{lines[1]}"
            time.sleep(0.05)
        raise RuntimeError(f"chromium wrote no DevToolsActivePort within {START_SECONDS}s")
    except BaseException:
        stop_process(proc, 10, group=True)
        shutil.rmtree(profile, ignore_errors=True)
        raise
