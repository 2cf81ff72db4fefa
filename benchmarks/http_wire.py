"""Just enough HTTP/1.1 framing for the loopback servers: requests with Content-Length.

botocore always sends ``Content-Length`` and never pipelines on one
connection, so a request ends at its header block plus that many bytes.
"""

from __future__ import annotations

import json
from typing import Any

HEADER_END = b"\r\n\r\n"

STATS_PATH = b"/__bench/stats"
"""The path at which the fake endpoint and the proxy report their request counts."""


class Request:
    __slots__ = ("body", "headers", "path")

    def __init__(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def operation(self) -> str:
        """The DynamoDB operation named in ``X-Amz-Target`` (``PutItem``...), or ``""``."""
        target = self.headers.get(b"x-amz-target", b"")
        return target.rpartition(b".")[2].decode()


def split_request(buffer: bytearray) -> tuple[Request, bytes] | None:
    """The first complete request in ``buffer`` with its raw bytes, removed from it."""
    end = buffer.find(HEADER_END)
    if end < 0:
        return None
    head = bytes(buffer[:end]).split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    total = end + len(HEADER_END) + length
    if len(buffer) < total:
        return None
    raw = bytes(buffer[:total])
    del buffer[:total]
    parts = head[0].split(b" ")
    path = parts[1] if len(parts) > 1 else b"/"
    return Request(path, headers, raw[total - length :]), raw


def response(status: int, body: bytes, reason: str = "") -> bytes:
    """A keep-alive response in DynamoDB's JSON protocol."""
    reason = reason or ("OK" if status == 200 else "Bad Request")
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/x-amz-json-1.0\r\n"
        "x-amzn-RequestId: bench\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def json_response(status: int, data: Any) -> bytes:
    return response(status, json.dumps(data, separators=(",", ":")).encode())
