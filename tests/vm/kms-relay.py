#!/usr/bin/python3
"""The host side of the VM's path to KMS (tests/vm/run.sh): HTTP over a virtio-serial port.

The guest has no network. Its secretfs talks HTTP to 127.0.0.1 inside the guest, where a busybox
`nc` hands each TCP connection to the virtio-serial port `secretfs.kms`; QEMU joins that port to
the unix socket this relay listens on. The relay reads one HTTP/1.1 request at a time from the
stream (request line, headers, a Content-Length body), sends it over a fresh TCP connection to
the emulator (moto, on 127.0.0.1 only), reads the whole response and writes it back with
`Connection: close`, so that the guest's client never reuses a connection and every request
comes with its own. One line per request goes to the log: method, path, X-Amz-Target, status
and the response's request id, which run.sh compares with what the guest's audit log says.

Standard library only; no chunked request bodies (the SDK sends none to KMS): such a request
is refused with a log line and a 501.
"""

import argparse
import os
import socket
import sys

MAX_HEADER_LINES = 200
MAX_LINE = 65536


class Closed(Exception):
    """The stream ended (QEMU went away)."""


def read_line(stream):
    line = stream.readline(MAX_LINE + 1)
    if not line:
        raise Closed()
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise ValueError("a line longer than %d bytes, or cut short" % MAX_LINE)
    return line


def read_head(stream):
    """The start line and headers up to the blank line: (start, [(name, value)])."""
    start = read_line(stream)
    # Blank lines before a request are allowed (RFC 9112 §2.2).
    while start in (b"\r\n", b"\n"):
        start = read_line(stream)
    headers = []
    while True:
        line = read_line(stream)
        if line in (b"\r\n", b"\n"):
            return start.rstrip(b"\r\n").decode("latin-1"), headers
        if len(headers) >= MAX_HEADER_LINES:
            raise ValueError("more than %d header lines" % MAX_HEADER_LINES)
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ValueError("a header line without a colon: %r" % line[:80])
        headers.append((name.strip(), value.strip()))


def header(headers, name):
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


def read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) != n:
        raise Closed()
    return data


def drain_chunked(stream):
    """Reads past a chunked body so that the next request starts where it should."""
    while True:
        size = int(read_line(stream).split(b";")[0].strip(), 16)
        if size == 0:
            while read_line(stream) not in (b"\r\n", b"\n"):
                pass
            return
        read_exact(stream, size + 2)


def decode_chunked(data):
    body = b""
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            raise ValueError("a chunked response cut short")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            return body
        body += data[:size]
        data = data[size + 2 :]


def without(headers, *names):
    drop = {n.lower() for n in names}
    return [(n, v) for n, v in headers if n.lower() not in drop]


def render(start, headers, body):
    head = start + "\r\n" + "".join("%s: %s\r\n" % (n, v) for n, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def reply(status, reason, text):
    body = (text + "\n").encode()
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return render("HTTP/1.1 %d %s" % (status, reason), headers, body)


def forward(upstream, start, headers, body, timeout):
    """Sends one request to the emulator on a fresh connection; (status, headers, body)."""
    headers = without(headers, "Connection", "Keep-Alive", "Proxy-Connection")
    headers.append(("Connection", "close"))
    with socket.create_connection(upstream, timeout=timeout) as s:
        s.sendall(render(start, headers, body))
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("the emulator's response has no end of headers (%d bytes)" % len(data))
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    status = int(status_line.split()[1])
    resp_headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        resp_headers.append((name.strip(), value.strip()))
    te = header(resp_headers, "Transfer-Encoding")
    if te and "chunked" in te.lower():
        rest = decode_chunked(rest)
    else:
        length = header(resp_headers, "Content-Length")
        if length is not None:
            rest = rest[: int(length)]
    resp_headers = without(
        resp_headers, "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length"
    )
    resp_headers += [("Content-Length", str(len(rest))), ("Connection", "close")]
    return status, status_line, resp_headers, rest


def serve(conn, upstream, log, timeout):
    stream = conn.makefile("rb")
    while True:
        try:
            start, headers = read_head(stream)
        except Closed:
            return
        parts = start.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            log_line(log, "-", "-", "-", "refused: not an HTTP/1.x request line: %r" % start[:80])
            conn.sendall(reply(400, "Bad Request", "not an HTTP/1.x request"))
            continue
        method, path, _ = parts
        target = header(headers, "X-Amz-Target") or "-"
        te = header(headers, "Transfer-Encoding")
        if te is not None:
            log_line(log, method, path, target, "501 refused: Transfer-Encoding %s (only Content-Length bodies are relayed)" % te)
            if "chunked" in te.lower():
                drain_chunked(stream)
            conn.sendall(reply(501, "Not Implemented", "kms-relay: Transfer-Encoding is not supported"))
            continue
        length = int(header(headers, "Content-Length") or "0")
        body = read_exact(stream, length)
        try:
            status, status_line, resp_headers, resp_body = forward(
                upstream, start, headers, body, timeout
            )
        except (OSError, ValueError) as e:
            log_line(log, method, path, target, "502 %s" % e)
            conn.sendall(reply(502, "Bad Gateway", "kms-relay: %s" % e))
            continue
        rid = header(resp_headers, "x-amzn-RequestId") or "-"
        log_line(log, method, path, target, "%d %s" % (status, rid))
        conn.sendall(render(status_line, resp_headers, resp_body))


def log_line(log, method, path, target, rest):
    log.write("%s %s %s %s\n" % (method, path, target, rest))
    log.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="unix socket QEMU's chardev connects to")
    ap.add_argument("--upstream", required=True, help="the emulator, 127.0.0.1:PORT")
    ap.add_argument("--log", required=True, help="one line per relayed request")
    ap.add_argument("--ready", required=True, help="created once the socket listens")
    ap.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    a = ap.parse_args()
    host, _, port = a.upstream.rpartition(":")
    if host != "127.0.0.1" or not port.isdigit():
        print("kms-relay: the upstream must be 127.0.0.1:PORT, not %s" % a.upstream, file=sys.stderr)
        return 2
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.listen)
    srv.listen(1)
    with open(a.log, "a") as log:
        open(a.ready, "w").close()
        conn, _ = srv.accept()
        srv.close()
        os.unlink(a.listen)
        try:
            serve(conn, (host, int(port)), log, a.timeout)
        except (OSError, ValueError) as e:
            log_line(log, "-", "-", "-", "relay stopped: %s" % e)
            print("kms-relay: stopped: %s" % e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
