"""A WSGI application for the worker's WSGI tests (tests/wsgi.rs): one path
per PEP 3333 point. Loaded as ``wsgi:pep3333_app`` or through
tests/pep3333.ini (PasteDeploy's ``call:`` factory, make_app).
"""

import hashlib
import io
import json
import sys
import threading
import time
from urllib.parse import parse_qs

# Resources whose close() was called, by name.
CLOSED = {}
_lock = threading.Lock()


def closed(name):
    with _lock:
        CLOSED[name] = CLOSED.get(name, 0) + 1


class Closing:
    """An iterable response that counts its close() and its chunks."""

    def __init__(self, name, chunks, delay=0.0):
        self.name = name
        self.chunks = chunks
        self.delay = delay

    def __iter__(self):
        for c in self.chunks:
            if self.delay:
                time.sleep(self.delay)
            yield c

    def close(self):
        closed(self.name)


class ClosingBytesIO(io.BytesIO):
    def close(self):
        closed("file")
        super().close()


def json_response(start_response, value, status="200 OK"):
    body = json.dumps(value, sort_keys=True).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def plain(start_response, text, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain")])
    return [text.encode()]


def read_body(environ, mode):
    """Read wsgi.input line by line in one of its ways; lines and digest."""
    inp = environ["wsgi.input"]
    lines = []
    if mode == "readline":
        while True:
            line = inp.readline()
            if not line:
                break
            lines.append(line)
    elif mode == "readlines":
        lines = inp.readlines()
    elif mode == "iter":
        lines = list(inp)
    else:  # read in 1000-byte pieces
        data = b""
        while True:
            piece = inp.read(1000)
            if not piece:
                break
            data += piece
        lines = data.splitlines(True)
    data = b"".join(lines)
    return {
        "lines": len(lines),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "longest": max((len(l) for l in lines), default=0),
    }


def make_app(global_conf=None, greeting="hello", **local_conf):
    """PasteDeploy app factory: the settings of the ini reach /environ."""

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}

        if path == "/environ":
            seen = {}
            for k, v in environ.items():
                if isinstance(v, (str, int, float, bool, tuple)):
                    seen[k] = v
                else:
                    seen[k] = "<%s>" % type(v).__name__
            seen["greeting"] = greeting
            seen["input.read"] = environ["wsgi.input"].read().decode("latin-1")
            seen["tracelog.log"] = callable(environ["tracelog"].log)
            seen["now"] = time.time()
            seen["sys.path[:3]"] = sys.path[:3]
            return json_response(start_response, seen)

        if path == "/trace":
            environ["tracelog"].log("app record " + query.get("m", ""))
            environ["tracelog"].log("coded record", code="T")
            return plain(start_response, "traced")

        if path == "/closed":
            with _lock:
                return json_response(start_response, dict(CLOSED))

        if path == "/stream":
            n = int(query.get("n", "5"))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Closing("stream", [b"chunk %d\n" % i for i in range(n)])

        if path == "/generator":
            # start_response called from inside the iteration.
            def gen():
                start_response("200 OK", [("Content-Type", "text/plain")])
                yield b"from "
                yield b""
                yield b"a generator"

            return gen()

        if path == "/write":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"written, ")
            return Closing("write", [b"then returned"])

        if path == "/exc_info":
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("before any output")
            except ValueError:
                start_response(
                    "503 Service Unavailable",
                    [("Content-Type", "text/plain"), ("X-Replaced", "yes")],
                    sys.exc_info(),
                )
            return [b"replaced by exc_info"]

        if path == "/exc_info_late":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"partial output")
            try:
                raise ValueError("after output: exc_info re-raised")
            except ValueError:
                start_response("500 Oops", [], sys.exc_info())
            return [b"never sent"]

        if path == "/twice":
            start_response("200 OK", [])
            start_response("200 OK", [])
            return [b"never sent"]

        if path == "/file":
            data = b"".join(b"line %05d\n" % i for i in range(10000))
            start_response(
                "200 OK",
                [("Content-Type", "text/plain"), ("X-Sha256", hashlib.sha256(data).hexdigest())],
            )
            return environ["wsgi.file_wrapper"](ClosingBytesIO(data), 4096)

        if path == "/upload":
            return json_response(start_response, read_body(environ, query.get("mode", "readline")))

        if path == "/error":
            raise RuntimeError("the test app failed on purpose")

        if path == "/errors":
            err = environ["wsgi.errors"]
            err.write("first line\nsecond ")
            err.writelines(["line\n", "unfinished"])
            err.flush()
            return plain(start_response, "logged")

        if path == "/slow":
            name = query.get("name", "slow")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Closing(name, [b"tick\n"] * 400, delay=0.025)

        if path == "/length":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return [b"hel", b"lo, and more than announced"]

        if path == "/short":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "50")])
            return [b"too short"]

        if path == "/str":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return ["a str is not bytes"]

        if path == "/sleep":
            ms = int(query.get("ms", "0"))
            time.sleep(ms / 1000.0)
            return plain(start_response, "slept %d ms" % ms)

        return plain(start_response, "not found: " + path, "404 Not Found")

    return app


application = make_app()
