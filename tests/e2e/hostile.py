"""Helpers of the hostile end-to-end suite (test_hostile.py).

- raw HTTP/1.1 and HTTP/2 (h2) clients that control every byte and frame a request is sent in:
  content-length, chunked bodies split at many points, chunked trailers, DATA split into many
  frames, an empty final DATA frame, request trailers (a HEADERS frame after DATA);
- `Recorder` + `RecordingProxy`: a reverse proxy between Envoy and the real MCP server that records
  the method, path, headers, full body and trailers of every request it receives (as they arrive,
  so a request Envoy resets halfway is recorded too) and forwards complete requests to the server;
- `HostileUpstream`: an upstream that answers with crafted bytes (see its docstring);
- a global count of the requests sent and the framings used.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import re
import select
import socket
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

# ------------------------------------------------------------------------------------------------
# Counting

STATS = {"requests": 0, "framings": set()}
_stats_lock = threading.Lock()


def count(framing: str):
    with _stats_lock:
        STATS["requests"] += 1
        STATS["framings"].add(framing)


def nonce() -> str:
    return "hn-" + uuid.uuid4().hex[:16]


# ------------------------------------------------------------------------------------------------
# What a client received


@dataclass
class Response:
    status: int = 0
    headers: list = field(default_factory=list)  # [(lower-case name, value)]
    body: bytes = b""
    trailers: list = field(default_factory=list)
    reset: bool = False  # the stream/connection was reset before a complete answer
    framing: str = ""

    def header(self, name: str):
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def decoded(self) -> bytes:
        """The body as a client would read it (content-encoding undone where possible)."""
        body = self.body
        encoding = (self.header("content-encoding") or "").lower()
        try:
            if "gzip" in encoding:
                body = gzip.decompress(body)
        except Exception:
            pass
        return body

    @property
    def text(self) -> str:
        return self.decoded().decode("utf-8", errors="replace")

    def messages(self) -> list:
        """Every JSON value a lenient client could find in the body: the whole body as JSON, each
        SSE event's data (LF, CRLF or CR line endings), each line that parses on its own."""
        text = self.text.lstrip("\ufeff")
        found = []

        def add(candidate: str):
            candidate = candidate.strip().lstrip("\ufeff")
            if not candidate:
                return
            try:
                found.append(json.loads(candidate))
            except ValueError:
                pass

        add(text)
        lines = re.split(r"\r\n|\r|\n", text)
        data: list[str] = []
        for line in lines + [""]:
            if line == "":
                if data:
                    add("\n".join(data))
                data = []
            elif line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
        if data:
            add("\n".join(data))
        for line in lines:
            add(line[5:] if line.startswith("data:") else line)
        return found

    def jsonrpc(self):
        """The first JSON-RPC answer or error object in the body (JSON or SSE), or None."""
        for message in self.messages():
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return message
        return None

    def error_code(self):
        message = self.jsonrpc()
        if message and isinstance(message.get("error"), dict):
            return message["error"].get("code")
        return None

    def summary(self) -> str:
        body = self.text
        return f"{self.status} {body[:300]!r}" + (" (reset)" if self.reset else "")


def strings_in(value) -> list:
    """Every string (keys too) inside a decoded JSON value."""
    out = []
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.append(key)
            out.extend(strings_in(item))
    elif isinstance(value, list):
        for item in value:
            out.extend(strings_in(item))
    return out


def leaks(response: Response, markers) -> list:
    """The forbidden markers a caller can see: in the raw (decoded) text or in any JSON string."""
    text = response.text
    seen = set()
    for marker in markers:
        if marker in text:
            seen.add(marker)
    for message in response.messages():
        for string in strings_in(message):
            for marker in markers:
                if marker in string:
                    seen.add(marker)
    return sorted(seen)


# ------------------------------------------------------------------------------------------------
# HTTP/1.1 over a raw socket


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answered(sock: socket.socket) -> bool:
    """The peer has already started answering (or closed): stop sending the body."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def http1(port: int, method: str, path: str, headers: list, body: bytes | None = None, *,
          chunks: list | None = None, trailers: list | None = None, framing: str = "h1-cl",
          timeout: float = 10, stream_for: float | None = None, stop=None) -> Response:
    """One request on a fresh connection (`connection: close`). `chunks` sends the body chunked,
    one chunk per piece, each in its own TCP segment; `trailers` ends the chunked body with them.
    `stream_for` reads a streaming answer for at most that long (or until `stop(bytes)` is true)."""
    count(framing)
    sock = _connect(port, timeout)
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    if chunks is not None:
        head += "transfer-encoding: chunked\r\n"
    elif body is not None:
        head += f"content-length: {len(body)}\r\n"
    head += "connection: close\r\n\r\n"
    try:
        if chunks is None:
            sock.sendall(head.encode("latin-1") + (body or b""))
        else:
            sock.sendall(head.encode("latin-1"))
            for piece in chunks:
                if _answered(sock):
                    break
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                time.sleep(0.001)
            else:
                tail = b"0\r\n"
                for name, value in trailers or []:
                    tail += f"{name}: {value}\r\n".encode("latin-1")
                sock.sendall(tail + b"\r\n")
    except OSError:
        pass
    raw, reset = _read_all(sock, timeout, stream_for, stop or _complete(method))
    sock.close()
    response = parse_http1_response(raw)
    response.reset = response.reset or (reset and response.status == 0)
    response.framing = framing
    return response


def _read_all(sock, timeout, stream_for=None, stop=None):
    raw = b""
    deadline = time.monotonic() + (stream_for if stream_for is not None else timeout)
    reset = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            reset = True
            break
        if not data:
            break
        raw += data
        if stop and stop(raw):
            break
    return raw, reset


def _complete(method: str):
    """Stop reading once the answer is complete (Envoy waits a second before closing after a
    local reply), or, for a GET, once an event stream has started (it never ends by itself)."""
    def stop(raw: bytes) -> bool:
        if b"\r\n\r\n" not in raw:
            return False
        response = parse_http1_response(raw)
        if not response.status:
            return False
        if method == "GET" and "text/event-stream" in (response.header("content-type") or ""):
            return True
        framed = (response.header("content-length") is not None
                  or (response.header("transfer-encoding") or "").lower() == "chunked")
        return framed and not response.reset
    return stop


def parse_http1_response(raw: bytes) -> Response:
    response = Response()
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        response.reset = True
        return response
    lines = head.decode("latin-1").split("\r\n")
    try:
        response.status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError):
        response.reset = True
        return response
    for line in lines[1:]:
        name, _, value = line.partition(":")
        response.headers.append((name.strip().lower(), value.strip()))
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        body, trailers, complete = decode_chunked(rest)
        response.body, response.trailers = body, trailers
        response.reset = not complete
    else:
        length = response.header("content-length")
        if length is not None and length.isdigit():
            response.body = rest[: int(length)]
            response.reset = len(rest) < int(length)
        else:
            response.body = rest
    return response


def decode_chunked(data: bytes):
    body, trailers, pos = b"", [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return body, trailers, False
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            return body, trailers, False
        pos = end + 2
        if size == 0:
            while True:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    return body, trailers, False
                line = data[pos:end].decode("latin-1")
                pos = end + 2
                if not line:
                    return body, trailers, True
                name, _, value = line.partition(":")
                trailers.append((name.strip().lower(), value.strip()))
        body += data[pos: pos + size]
        if len(data) < pos + size + 2:
            return body, trailers, False
        pos += size + 2


def split_points(body: bytes, pieces: int = 24) -> list:
    """The body cut into about `pieces` parts of varying size (1 byte up to a few dozen)."""
    if not body:
        return [b""]
    cuts, pos, step = [], 0, 1
    size = max(1, len(body) // pieces)
    while pos < len(body):
        take = 1 if step % 3 == 0 else size + (step % 5)
        cuts.append(body[pos: pos + take])
        pos += take
        step += 1
    return cuts


# ------------------------------------------------------------------------------------------------
# HTTP/2 (prior knowledge, h2c) over a raw socket


def http2(port: int, method: str, path: str, headers: list, body: bytes | None = None, *,
          frames: list | None = None, empty_end: bool = False, trailers: list | None = None,
          framing: str = "h2", timeout: float = 10, stream_for: float | None = None, stop=None) -> Response:
    """One request on a fresh HTTP/2 connection. The body goes out as `frames` (one DATA frame
    each, flushed one by one), optionally followed by an empty DATA frame with END_STREAM or by
    trailers (a HEADERS frame with END_STREAM)."""
    count(framing)
    sock = _connect(port, timeout)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                                                       validate_outbound_headers=False,
                                                                       normalize_outbound_headers=False))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
    conn.increment_flow_control_window(1 << 24)
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    if frames is None:
        frames = [body] if body else []
    all_headers = [(":method", method), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"), (":path", path)]
    all_headers += [(name.lower(), value) for name, value in headers]
    response = Response(framing=framing)
    done = False

    def pump(block: bool) -> bool:
        """Reads what the server sent; returns True when the stream is over."""
        nonlocal done
        while not done:
            if not block and not _answered(sock):
                return done
            try:
                data = sock.recv(65536)
            except (socket.timeout, OSError):
                done = True
                response.reset = response.reset or response.status == 0
                return done
            if not data:
                done = True
                return done
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                done = True
                response.reset = True
                return done
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    for name, value in event.headers:
                        name = name.decode() if isinstance(name, bytes) else name
                        value = value.decode() if isinstance(value, bytes) else value
                        if name == ":status":
                            response.status = int(value)
                        else:
                            response.headers.append((name, value))
                    if stop is None and method == "GET" and "text/event-stream" in (response.header("content-type") or ""):
                        done = True  # a GET stream never ends by itself
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    response.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                    if stop and stop(response.body):
                        done = True
                elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == sid:
                    response.trailers = [(n, v) for n, v in event.headers]
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    done = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    response.reset = True
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    done = True
            pending = conn.data_to_send()
            if pending:
                try:
                    sock.sendall(pending)
                except OSError:
                    done = True
        return done

    try:
        end_on_headers = not frames and not empty_end and not trailers
        conn.send_headers(sid, all_headers, end_stream=end_on_headers)
        sock.sendall(conn.data_to_send())
        for index, piece in enumerate(frames):
            if pump(block=False):
                break
            last = index == len(frames) - 1
            conn.send_data(sid, piece, end_stream=last and not empty_end and not trailers)
            sock.sendall(conn.data_to_send())
            if len(frames) > 1:
                time.sleep(0.001)
        else:
            if empty_end and not pump(block=False):
                conn.send_data(sid, b"", end_stream=True)
                sock.sendall(conn.data_to_send())
            if trailers and not pump(block=False):
                conn.send_headers(sid, [(n.lower(), v) for n, v in trailers], end_stream=True)
                sock.sendall(conn.data_to_send())
    except (h2.exceptions.H2Error, OSError):
        pass
    deadline = time.monotonic() + (stream_for if stream_for is not None else timeout)
    while not done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        pump(block=True)
    sock.close()
    return response


# ------------------------------------------------------------------------------------------------
# Requests as an upstream receives them


@dataclass
class Record:
    method: str
    path: str
    headers: list
    body: bytearray = field(default_factory=bytearray)
    trailers: list = field(default_factory=list)
    complete: bool = False
    forwarded: bool = False
    partial: bytes = b""  # an incomplete chunk still being received

    def received(self) -> bytes:
        return bytes(self.body) + self.partial

    def header_values(self, name: str) -> list:
        return [value for key, value in self.headers if key == name.lower()]

    def mentions(self, marker: str) -> bool:
        needle = marker.encode()
        return (needle in self.received() or needle in self.path.encode()
                or any(marker in value for _, value in self.headers + self.trailers))


class Recorder:
    def __init__(self):
        self.records: list[Record] = []
        self.lock = threading.Lock()

    def add(self, record: Record):
        with self.lock:
            self.records.append(record)

    def matching(self, marker: str) -> list:
        with self.lock:
            return [record for record in self.records if record.mentions(marker)]


def read_request(sock: socket.socket, recorder: Recorder) -> Record | None:
    """Reads one HTTP/1.1 request, recording it as its parts arrive."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    record = Record(method=method, path=path, headers=headers)
    recorder.add(record)

    def more() -> bytes:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        return data

    try:
        if any(k == "transfer-encoding" and "chunked" in v.lower() for k, v in headers):
            while True:
                while b"\r\n" not in buf:
                    buf += more()
                line, _, buf = buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        while b"\r\n" not in buf:
                            buf += more()
                        line, _, buf = buf.partition(b"\r\n")
                        if not line:
                            break
                        name, _, value = line.decode("latin-1").partition(":")
                        record.trailers.append((name.strip().lower(), value.strip()))
                    break
                while len(buf) < size + 2:
                    record.partial = bytes(buf[:size])
                    buf += more()
                record.partial = b""
                record.body += buf[:size]
                buf = buf[size + 2:]
        else:
            length = int(next((v for k, v in headers if k == "content-length"), "0") or 0)
            while len(buf) < length:
                record.body[:] = buf
                buf += more()
            record.body[:] = buf[:length]
        record.complete = True
    except (EOFError, OSError, ValueError):
        pass
    return record


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
              "proxy-connection"}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class RecordingProxy:
    """Between Envoy and the real MCP server: records every request Envoy sends (as it arrives),
    forwards each complete one to the server and relays its answer (streams included)."""

    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self.recorder = Recorder()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                owner._handle(self.request)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handle(self, client: socket.socket):
        record = read_request(client, self.recorder)
        if record is None or not record.complete:
            return
        record.forwarded = True
        upstream = socket.create_connection(("127.0.0.1", self.backend_port), timeout=30)
        head = f"{record.method} {record.path} HTTP/1.1\r\n"
        for name, value in record.headers:
            if name not in HOP_BY_HOP:
                head += f"{name}: {value}\r\n"
        head += f"content-length: {len(record.body)}\r\nconnection: close\r\n\r\n"
        upstream.sendall(head.encode("latin-1") + bytes(record.body))
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = upstream.recv(65536)
            if not data:
                upstream.close()
                return
            buf += data
        answer_head, _, rest = buf.partition(b"\r\n\r\n")
        lines = answer_head.split(b"\r\n")
        kept = [lines[0]] + [line for line in lines[1:]
                             if line.split(b":")[0].strip().lower() not in (b"connection", b"keep-alive")]
        client.sendall(b"\r\n".join(kept) + b"\r\nconnection: close\r\n\r\n" + rest)
        client.settimeout(None)
        upstream.settimeout(None)
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 60)
                if not readable:
                    continue
                if upstream in readable:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    client.sendall(data)
                if client in readable:
                    if not client.recv(65536):
                        break
        except OSError:
            pass
        finally:
            upstream.close()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------------------------------------
# A misbehaving upstream

ALLOWED_TOOL = {"name": "echo", "description": "Echoes", "inputSchema": {"type": "object"}}
FORBIDDEN_TOOL = {"name": "get-env", "description": "Dumps the environment", "inputSchema": {"type": "object"}}
OTHER_TOOL = {"name": "get-sum", "description": "Adds", "inputSchema": {"type": "object"}}
TOOLS = [ALLOWED_TOOL, FORBIDDEN_TOOL, OTHER_TOOL]


def _answer(id_json: str, tools=None) -> str:
    tools = TOOLS if tools is None else tools
    return '{"jsonrpc":"2.0","id":%s,"result":{"tools":%s}}' % (id_json, json.dumps(tools, separators=(",", ":")))


def _sse(*datas: str, eol: str = "\n") -> bytes:
    return "".join(f"data: {d}{eol}{eol}" for d in datas).encode()


SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
JSON_CT = [("content-type", "application/json")]


def hostile_answer(shape: str, id_json: str):
    """(status, headers, body, paced) for a list request with the raw id `id_json`."""
    answer = _answer(id_json)
    if shape == "json":
        return 200, JSON_CT, answer.encode(), False
    if shape == "json-charset":
        return 200, [("content-type", "application/json; charset=utf-8")], answer.encode(), False
    if shape == "sse":
        return 200, SSE, _sse(answer), False
    if shape == "sse-byte-split":
        return 200, SSE, _sse(_answer(id_json, [ALLOWED_TOOL, FORBIDDEN_TOOL])), True
    if shape == "sse-server-request-same-id-first":
        request = '{"jsonrpc":"2.0","id":%s,"method":"roots/list","params":{}}' % id_json
        return 200, SSE, _sse(request, answer), False
    if shape == "sse-id-7.0":
        return 200, SSE, _sse(_answer(id_json + ".0")), False
    if shape == "json-id-7.0":
        return 200, JSON_CT, _answer(id_json + ".0").encode(), False
    if shape == "sse-id-string":
        return 200, SSE, _sse(_answer('"%s"' % id_json)), False
    if shape == "sse-id-1e0":
        return 200, SSE, _sse(_answer(id_json + "e0")), False
    if shape == "sse-ends-without-answer":
        note = '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}'
        return 200, SSE, _sse(note), False
    if shape == "sse-unterminated-answer":
        return 200, SSE, ("data: " + answer + "\n").encode(), False
    if shape == "sse-crlf":
        return 200, SSE, _sse(answer, eol="\r\n"), False
    if shape == "sse-cr":
        return 200, SSE, _sse(answer, eol="\r"), False
    if shape == "sse-multiline-data":
        pretty = json.dumps(json.loads(answer), indent=1)
        return 200, SSE, ("".join(f"data: {line}\n" for line in pretty.split("\n")) + "\n").encode(), False
    if shape == "sse-fields-comments-bom":
        body = ("\ufeff: keep-alive\n\nid: 1\nevent: message\nretry: 1000\ndata:" + answer + "\n\n").encode()
        return 200, SSE, body, False
    if shape == "sse-two-answers":
        first = _answer(id_json, [ALLOWED_TOOL])
        return 200, SSE, _sse(first, answer), False
    if shape == "sse-upper-content-type":
        return 200, [("content-type", "Text/Event-Stream")], _sse(answer), False
    if shape == "json-duplicate-tools-key":
        body = '{"jsonrpc":"2.0","id":%s,"result":{"tools":[%s],"tools":%s}}' % (
            id_json, json.dumps(ALLOWED_TOOL), json.dumps(TOOLS))
        return 200, JSON_CT, body.encode(), False
    if shape == "json-unicode-escaped-name":
        body = answer.replace('"name":"get-env"', '"name":"get\\u002denv"')
        return 200, JSON_CT, body.encode(), False
    if shape == "json-gzip":
        return 200, JSON_CT + [("content-encoding", "gzip")], gzip.compress(answer.encode()), False
    if shape == "json-500-with-result":
        return 500, JSON_CT, answer.encode(), False
    if shape == "json-trailing-second-answer":
        return 200, JSON_CT, (_answer(id_json, [ALLOWED_TOOL]) + answer).encode(), False
    if shape == "json-no-content-type":
        return 200, [], answer.encode(), False
    if shape == "sse-data-no-space-crlf-bom":
        return 200, SSE, ("\ufeffdata:" + answer + "\r\n\r\n").encode(), False
    raise ValueError(shape)


class HostileUpstream:
    """A misbehaving MCP server, NOT a stand-in for a real one: it answers every request with the
    crafted bytes of the shape named by the request's `x-hostile-shape` header (an SSE answer split
    at every byte, a server-to-client request reusing the list request's id before the answer, the
    answer's id re-serialised `7` -> `7.0`, a stream that ends without the answer, CRLF or CR line
    endings, multi-line data, duplicate members, gzip, ...). Real servers (the SDK, server-everything)
    do not produce these; a buggy or compromised one may, and the filter must not let a forbidden
    item through to the caller because of the framing. Requests are recorded like the proxy's."""

    def __init__(self):
        self.recorder = Recorder()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                owner._handle(self.request)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handle(self, client: socket.socket):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        record = read_request(client, self.recorder)
        if record is None or not record.complete:
            return
        shape = (record.header_values("x-hostile-shape") or ["json"])[0]
        match = re.search(rb'"id"\s*:\s*(-?\d+|"[^"]*")', bytes(record.body))
        id_json = match.group(1).decode() if match else "7"
        status, headers, body, paced = hostile_answer(shape, id_json)
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += "transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        try:
            client.sendall(head.encode("latin-1"))
            pieces = [body[i:i + 1] for i in range(len(body))] if paced else [body]
            for piece in pieces:
                client.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                if paced:
                    time.sleep(0.0005)
            client.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------------------------------------
# A JWKS server that answers slowly, so a request with an unknown kid is really held


class SlowJwks:
    def __init__(self, keys, delay: float):
        self.keys = keys
        self.delay = delay
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                time.sleep(owner.delay)
                body = json.dumps({"keys": [key.jwk() for key in owner.keys]}).encode()
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------------------------------------
# Hand-made tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(claims: dict, key, kid: str) -> str:
    """The classic RS256 -> HS256 confusion: the server's public key (PEM) as the HMAC secret."""
    from cryptography.hazmat.primitives import serialization
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64url(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def alg_none(claims: dict, kid: str) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "at+jwt", "kid": kid}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."
