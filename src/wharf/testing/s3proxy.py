"""A fault-injecting HTTP proxy on loopback in front of a real S3 server (SeaweedFS in the
tests), for the S3 fault tests: the store under test talks to the proxy, the proxy to S3.

Rules are matched on the S3 operation (told from the method, the path and the query, as S3
does), the HTTP method and a regular expression searched in the object key; the first rule
that matches a request acts on it, up to ``times`` times::

    proxy = S3FaultProxy(seaweed.endpoint, ACCESS_KEY, SECRET_KEY).start()
    store = S3BlobStore(BUCKET, endpoint=proxy.endpoint, ...)
    failing = proxy.fail_deletes(r"/ab12")           # DeleteObjects: these keys fail, kept
    broken = proxy.answer(500, operation="DeleteObjects", times=3)
    stuck = proxy.stall(method="GET", key=r"/data$")  # held unanswered (a timeout), then hung up
    failing.hits, proxy.count("ListObjectsV2"), broken.remove(), proxy.clear()

``fail_deletes`` answers as S3 does when some keys of a DeleteObjects fail: 200, with an
``<Error>`` per failed key, and those keys are not deleted (the request goes on without them:
its body is rewritten, its checksum recomputed and the request signed again with the
credentials the proxy was given). Every request is logged in ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
# Not passed on: they describe one connection, not the request.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}


@dataclass
class Rule:
    """One fault. ``hits`` counts what it acted on: requests, or (fail_deletes) keys."""

    action: str  # "fail_deletes" | "answer" | "stall"
    operation: str | None = None  # e.g. "PutObject", "DeleteObjects"; None: any
    method: str | None = None
    key: re.Pattern[str] | None = None  # searched in the object key (in DeleteObjects: each key)
    status: int = 500
    times: int | None = None  # acts on this many requests at most (None: on every one)
    seconds: float | None = None  # stall: how long to hold (None: until released or stopped)
    forward: bool = False  # stall: after the hold, pass the request on (a slow but working S3)
    hits: int = 0
    requests: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    _proxy: S3FaultProxy | None = None

    def applies(self, operation: str, method: str, key: str) -> bool:
        if self.times is not None and self.requests >= self.times:
            return False
        if self.operation is not None and self.operation != operation:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.action == "fail_deletes":
            return operation == "DeleteObjects"
        return self.key is None or self.key.search(key) is not None

    def release(self) -> None:
        """Let go of the requests this rule is stalling."""
        self.released.set()

    def remove(self) -> None:
        self.release()
        if self._proxy is not None:
            self._proxy.remove(self)


@dataclass(frozen=True)
class Seen:
    method: str
    operation: str
    key: str
    status: int  # what the client was answered; 0: hung up without an answer


def operation_of(method: str, key: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """The S3 operation a path-style request asks for."""
    copy = "x-amz-copy-source" in headers
    if not key:
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads"
            return "ListObjectsV2" if "list-type" in query else "ListObjects"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, method)
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "PUT":
        if "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    return "HeadObject" if method == "HEAD" else method


class S3FaultProxy:
    def __init__(self, upstream: str, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.credentials = (access_key, secret_key, region)
        self.rules: list[Rule] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> S3FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.clear()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- rules ------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        rule._proxy = self
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail_deletes(self, key: str, times: int | None = None) -> Rule:
        """Keys matching ``key`` inside DeleteObjects requests fail (an ``<Error>`` each, 200
        for the request) and are not deleted; the other keys are deleted as asked."""
        return self.add(Rule("fail_deletes", key=re.compile(key), times=times))

    def answer(
        self,
        status: int = 500,
        *,
        operation: str | None = None,
        method: str | None = None,
        key: str | None = None,
        times: int | None = None,
    ) -> Rule:
        """Matching requests are answered ``status`` with an S3 error body, not passed on."""
        pattern = re.compile(key) if key is not None else None
        return self.add(Rule("answer", operation, method, pattern, status=status, times=times))

    def stall(
        self,
        *,
        operation: str | None = None,
        method: str | None = None,
        key: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
        forward: bool = False,
    ) -> Rule:
        """Matching requests get no answer for ``seconds`` (or until released): the client
        times out. Then the connection is closed, the request not passed on unless ``forward``."""
        pattern = re.compile(key) if key is not None else None
        return self.add(
            Rule("stall", operation, method, pattern, times=times, seconds=seconds, forward=forward)
        )

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self.rules:
                self.rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            rules, self.rules = self.rules, []
        for rule in rules:
            rule.release()

    def count(self, operation: str | None = None, key: str | None = None) -> int:
        """Requests seen (answered or not) for this operation and key pattern."""
        pattern = re.compile(key) if key is not None else None
        with self._lock:
            seen = list(self.requests)
        return sum(
            1
            for s in seen
            if (operation is None or s.operation == operation)
            and (pattern is None or pattern.search(s.key) is not None)
        )

    def _match(self, operation: str, method: str, key: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.applies(operation, method, key):
                    rule.requests += 1
                    return rule
        return None

    def _seen(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    # -- DeleteObjects rewriting -------------------------------------------------------------

    def resign(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """The headers of a request whose body was changed, with its checksum and its
        SigV4 signature made again."""
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        fresh = {k: v for k, v in headers.items() if k.lower() not in _SIGNATURE}
        for name in list(fresh):
            checksum = _CHECKSUMS.get(name.lower())
            if checksum is not None:
                fresh[name] = base64.b64encode(checksum(body)).decode()
        request = AWSRequest(method=method, url=url, data=body, headers=fresh)
        access_key, secret_key, region = self.credentials
        S3SigV4Auth(Credentials(access_key, secret_key), "s3", region).add_auth(request)
        return dict(request.headers.items())


_SIGNATURE = {"authorization", "x-amz-date", "x-amz-content-sha256", "content-length"}
_CHECKSUMS: dict[str, Any] = {
    "content-md5": lambda body: hashlib.md5(body).digest(),
    "x-amz-checksum-crc32": lambda body: zlib.crc32(body).to_bytes(4, "big"),
    "x-amz-checksum-sha1": lambda body: hashlib.sha1(body).digest(),
    "x-amz-checksum-sha256": lambda body: hashlib.sha256(body).digest(),
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _delete_request(keys: list[str], quiet: bool) -> bytes:
    objects = "".join(f"<Object><Key>{escape(key)}</Key></Object>" for key in keys)
    quietly = "<Quiet>true</Quiet>" if quiet else ""
    head = f'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="{S3_XMLNS}">'
    return f"{head}{objects}{quietly}</Delete>".encode()


def _errors(keys: list[str]) -> str:
    return "".join(
        f"<Error><Key>{escape(key)}</Key><Code>InternalError</Code>"
        "<Message>injected by the test proxy</Message></Error>"
        for key in keys
    )


def _with_errors(answer: bytes, keys: list[str]) -> bytes:
    text = answer.decode()
    errors = _errors(keys)
    end = text.rfind("</DeleteResult>")
    if end >= 0:
        return (text[:end] + errors + text[end:]).encode()
    closed = re.search(r"<DeleteResult([^>]*)/>", text)  # a quiet answer with nothing in it
    if closed is not None:
        whole = f"<DeleteResult{closed.group(1)}>{errors}</DeleteResult>"
        return (text[: closed.start()] + whole + text[closed.end() :]).encode()
    raise ValueError(f"not a DeleteObjects answer: {text[:200]!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], proxy: S3FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and Expect: 100-continue answered
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        proxy = self.server.proxy
        method = self.command
        parts = urlsplit(self.path)
        bucket_and_key = unquote(parts.path).lstrip("/").split("/", 1)
        key = bucket_and_key[1] if len(bucket_and_key) > 1 else ""
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        operation = operation_of(method, key, query, {k.lower(): v for k, v in headers.items()})
        body = self._body()
        rule = proxy._match(operation, method, key)
        status = 0
        recorded = False

        def record() -> None:
            # Before the answer goes out: a client that has its answer finds it counted.
            nonlocal recorded
            if not recorded:
                proxy._seen(Seen(method, operation, key, status))
                recorded = True

        try:
            if rule is not None and rule.action == "stall":
                rule.hits += 1
                held = rule.seconds if rule.seconds is not None else 3600.0
                rule.released.wait(held)
                if not rule.forward or proxy._stopping.is_set():
                    self.close_connection = True  # hung up, nothing answered nor passed on
                    return
            if rule is not None and rule.action == "answer":
                rule.hits += 1
                status = rule.status
                error = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                    f"<Message>injected by the test proxy</Message><Key>{escape(key)}</Key></Error>"
                ).encode()
                record()
                self._answer(status, [("Content-Type", "application/xml")], error)
                return
            failed: list[str] = []
            if rule is not None and rule.action == "fail_deletes":
                body, headers, failed = self._without_failing(rule, body, headers)
                if failed and body == b"":  # every key failed: nothing to pass on
                    status = 200
                    head = f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="{S3_XMLNS}">'
                    whole = head + _errors(failed) + "</DeleteResult>"
                    record()
                    self._answer(status, [("Content-Type", "application/xml")], whole.encode())
                    return
            status, reason, answer_headers, answer = self._forward(method, headers, body)
            if failed and status == 200:
                answer = _with_errors(answer, failed)
            record()
            self._answer(status, answer_headers, answer, reason, keep_length=method == "HEAD")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            record()

    def _without_failing(
        self, rule: Rule, body: bytes, headers: dict[str, str]
    ) -> tuple[bytes, dict[str, str], list[str]]:
        """The DeleteObjects request without the keys ``rule`` fails, signed again; and those keys."""
        tree = ElementTree.fromstring(body)
        keys = [
            (element.text or "")
            for obj in tree
            if _local(obj.tag) == "Object"
            for element in obj
            if _local(element.tag) == "Key"
        ]
        quiet = any(_local(e.tag) == "Quiet" and (e.text or "").strip() == "true" for e in tree)
        assert rule.key is not None
        failed = [k for k in keys if rule.key.search(k) is not None]
        if not failed:
            return body, headers, []
        rule.hits += len(failed)
        kept = [k for k in keys if k not in failed]
        if not kept:
            return b"", headers, failed
        body = _delete_request(kept, quiet)
        url = f"http://{headers.get('Host', '')}{self.path}"
        return body, self.server.proxy.resign("POST", url, headers, body), failed

    def _forward(
        self, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self.server.proxy.upstream
        upstream = http.client.HTTPConnection(host, port, timeout=300)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            if body or method in {"PUT", "POST"}:
                sent["Content-Length"] = str(len(body))
            upstream.request(method, self.path, body=body, headers=sent)
            response = upstream.getresponse()
            answer = response.read()
            answer_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, response.reason, answer_headers, answer
        finally:
            upstream.close()

    def _answer(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        reason: str | None = None,
        keep_length: bool = False,
    ) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() == "content-length" and not keep_length:
                continue
            self.send_header(name, value)
        if not keep_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
