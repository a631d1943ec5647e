"""Headless Chromium for the report tests, driven over the DevTools protocol (aiohttp, which
MLflow brings, is the websocket client): open a local file with the network off, list its
images as loaded, collect console errors and any request that would leave the machine, and
take a screenshot.

`python tests/browser.py REPORT.html OUT.png` writes the screenshot of a report's top (the
README's docs/report.png).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         # no network: every proxied request goes nowhere, and no name resolves
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,900",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]
INSTALL_SECONDS = 600
why_not: list[str] = []  # why chromium() found none


def chromium() -> str | None:
    """Debian's chromium; installed with apt-get (once, as root) when it is missing. None, with
    the reason in `why_not`, when it cannot be had."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        why_not.append("no chromium and no apt-get to install it")
        return None
    try:
        for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(step, check=True, capture_output=True, timeout=INSTALL_SECONDS,
                           env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.SubprocessError) as error:
        why_not.append(f"chromium is missing and `apt-get install chromium` failed: {error}")
        return None
    return CHROMIUM if Path(CHROMIUM).exists() else None


@dataclass
class Page:
    """What the browser saw of one page."""

    images: list[dict[str, Any]]  # {alt, complete, width}: naturalWidth, 0 when not loaded
    console_errors: list[str]
    requests: list[str] = field(default_factory=list)  # every URL it asked for
    screenshot: bytes | None = None

    @property
    def outside(self) -> list[str]:
        """Requests that would have left the machine (anything but the file and data: URIs)."""
        return [url for url in self.requests if not url.startswith(("file:", "data:"))]


def open_page(path: Path, screenshot: bool = False, timeout: float = 60) -> Page:
    """Open `path` in a fresh headless Chromium with the network off and read the page."""
    binary = chromium()
    if binary is None:
        raise RuntimeError(why_not[-1])
    # its helper processes (renderer, crash handler) may still write to the profile as it goes
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            port = _devtools_port(Path(profile), proc, timeout)
            return asyncio.run(asyncio.wait_for(_read(port, path, screenshot), timeout))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # chromium and every helper it started
            proc.wait()


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    """Chromium writes the port it chose into DevToolsActivePort in its profile."""
    deadline = time.monotonic() + timeout
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline and proc.poll() is None:
        if active.exists() and (lines := active.read_text().split()):
            return int(lines[0])
        time.sleep(0.1)
    raise RuntimeError(f"chromium gave no DevTools port (exit code {proc.poll()})")


async def _read(port: int, path: Path, screenshot: bool) -> Page:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
            target = next(t for t in await answer.json() if t["type"] == "page")
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Session(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.call(f"{domain}.enable")
            await cdp.call("Network.emulateNetworkConditions", offline=True, latency=0,
                           downloadThroughput=0, uploadThroughput=0)
            await cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                           deviceScaleFactor=1, mobile=False)
            await cdp.call("Page.navigate", url=path.resolve().as_uri())
            await cdp.until("Page.loadEventFired")
            found = await cdp.call("Runtime.evaluate", returnByValue=True, expression=(
                "[...document.images].map(i => ({alt: i.alt, complete: i.complete, "
                "width: i.naturalWidth}))"))
            shot = None
            if screenshot:
                taken = await cdp.call("Page.captureScreenshot", format="png", clip={
                    "x": 0, "y": 0, "width": 1280, "height": 900, "scale": 1})
                shot = base64.b64decode(taken["data"])
            return Page(found["result"]["value"], cdp.errors, cdp.requests, shot)


class _Session:
    """Calls and events on one DevTools websocket; console errors and requests as they come."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids = ws, itertools.count(1)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.seen: set[str] = set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._event(message)

    async def until(self, event: str) -> None:
        while event not in self.seen:
            self._event(await self.ws.receive_json())

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method", ""), message.get("params", {})
        self.seen.add(method)
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])


if __name__ == "__main__":
    page = open_page(Path(sys.argv[1]), screenshot=True)
    Path(sys.argv[2]).write_bytes(page.screenshot or b"")
    print(f"{sys.argv[2]}: {len(page.images)} images, {len(page.console_errors)} console errors")
