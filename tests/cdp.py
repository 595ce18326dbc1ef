"""Just enough of the Chrome DevTools Protocol, over a stdlib WebSocket, to click in a page and read it back.

Headless chromium with ``--remote-debugging-port=0`` says on stderr where its DevTools server listens (on
127.0.0.1); the page's own WebSocket comes from its /json/list. Only what the HTML report's tests need:
evaluate an expression, and press and release the mouse at a point, as a user's click does.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit


class Page:
    """One chromium showing ``url``; closed with the browser."""

    def __init__(self, argv: list[str], url: str, timeout: float = 30) -> None:
        self.log: list[str] = []  # chromium's stderr, console messages included
        self._browser = subprocess.Popen(
            [*argv, "--remote-debugging-port=0", url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        listening = threading.Event()
        self._reader = threading.Thread(target=self._read_log, args=(listening,), daemon=True)
        self._reader.start()
        self._next = 0
        try:
            assert listening.wait(timeout), f"chromium gave no DevTools address: {self.log}"
            self._socket = _connect(self._page_socket(timeout), timeout)
        except BaseException:
            self._end()
            raise

    def _page_socket(self, timeout: float) -> str:
        port = next(int(m[1]) for line in self.log if (m := re.search(r"ws://127\.0\.0\.1:(\d+)/", line)))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as answer:
            targets = json.load(answer)
        return str(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])

    def _read_log(self, listening: threading.Event) -> None:
        assert self._browser.stderr is not None
        for line in self._browser.stderr:
            self.log.append(line.rstrip("\n"))
            if "DevTools listening on ws://" in line:
                listening.set()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        _send(self._socket, json.dumps({"id": self._next, "method": method, "params": params}).encode())
        while True:  # events come in between: skipped
            message = json.loads(_receive(self._socket))
            if message.get("id") == self._next:
                assert "error" not in message, message
                return dict(message["result"])

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """Press and release the left button over the middle of ``selector``'s element, scrolled into view."""
        middle = "r => [r.x + r.width / 2, r.y + r.height / 2]"
        box = self.evaluate(
            f"(e => (e.scrollIntoView({{block: 'center'}}), ({middle})(e.getBoundingClientRect())))({_query(selector)})"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def wait_for(self, expression: str, timeout: float = 10) -> Any:
        """The value of ``expression`` once it is truthy (a click's effects come after its event)."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.05)
        return value

    def close(self) -> None:
        self._socket.close()
        self._end()

    def _end(self) -> None:
        self._browser.kill()
        self._browser.wait()
        self._reader.join(timeout=10)  # its pipe ends with the browser
        assert self._browser.stderr is not None
        self._browser.stderr.close()


def _query(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})"


def _connect(url: str, timeout: float) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", url
    connection = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    connection.sendall(
        f"GET {parts.path} HTTP/1.1\r\nHost: 127.0.0.1:{parts.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += connection.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return connection


def _send(connection: socket.socket, payload: bytes) -> None:
    """One masked text frame, as a client must send."""
    n = len(payload)
    length = (
        bytes([0x80 | n])
        if n < 126
        else struct.pack(">BH", 0x80 | 126, n)
        if n < 2**16
        else struct.pack(">BQ", 0xFF, n)
    )
    mask = os.urandom(4)
    connection.sendall(b"\x81" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _receive(connection: socket.socket) -> bytes:
    """One message: frames until the one marked final."""
    message = b""
    while True:
        first, second = _exactly(connection, 2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", _exactly(connection, 2))
        elif n == 127:
            (n,) = struct.unpack(">Q", _exactly(connection, 8))
        message += _exactly(connection, n)
        if first & 0x80:
            return message


def _exactly(connection: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = connection.recv(n - len(data))
        assert chunk, "chromium closed the DevTools connection"
        data += chunk
    return data
