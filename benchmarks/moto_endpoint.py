"""moto's DynamoDB-protocol server in a process of its own, for end-to-end runs.

Run: ``python -m benchmarks.moto_endpoint``; prints ``LISTENING <url>`` and
serves until its standard input closes.
"""

from __future__ import annotations

import logging
import sys

from moto.server import ThreadedMotoServer

from benchmarks.processes import READY_PREFIX


def main() -> None:
    # The server logs every request line; the harness's output should stay readable.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"{READY_PREFIX}http://{host}:{port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
