"""Loopback servers in processes of their own, so their CPU time is never the client's.

A server process prints ``LISTENING <url>`` once it accepts connections and
exits when its standard input closes, so it cannot outlive the harness.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self

READY_PREFIX = "LISTENING "
ROOT = Path(__file__).resolve().parent.parent


def serve_until_stdin_closes(starting: Coroutine[Any, Any, asyncio.Server]) -> None:
    """Start an asyncio server, announce its URL, serve until stdin reaches EOF."""

    async def serve() -> None:
        server = await starting
        port = server.sockets[0].getsockname()[1]
        print(f"{READY_PREFIX}http://127.0.0.1:{port}", flush=True)
        await wait_for_stdin_eof()
        server.close()

    asyncio.run(serve())


async def wait_for_stdin_eof() -> None:
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def watch() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(closed.set_result, None)

    threading.Thread(target=watch, daemon=True).start()
    await closed


class ServerProcess:
    """``python -m <module> <args>``, started and stopped as a context manager."""

    def __init__(self, module: str, *args: str) -> None:
        self.command = [sys.executable, "-m", module, *args]
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"{' '.join(self.command)} did not start: {line!r}")
        self.url = line[len(READY_PREFIX) :].strip()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
