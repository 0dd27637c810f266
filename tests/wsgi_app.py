"""A tiny WSGI app served by waitress, for the upstream-app tests.

Prints "PORT <n>" on stdout once it listens on 127.0.0.1 (port 0 = any).
Arguments: [PORT [status=CODE] [delay_ms=MS]]: with a status (say 503)
every request gets it, as from an application that is up but failing; with
a delay every request takes that much longer, as from a slow application.

  /echo        JSON: method, path, query, selected headers, body length
               and FNV-1a digest
  /big?size=N  N bytes of the pattern i % 251, streamed without a length
               (waitress sends it chunked)
  /sized?size=N  the same with a Content-Length
"""
import json
import sys
import time

import waitress


def fnv1a(data, h=0xCBF29CE484222325):
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def pattern(offset, n):
    return bytes((offset + i) % 251 for i in range(n))


def stream(size):
    sent = 0
    while sent < size:
        n = min(65536, size - sent)
        yield pattern(sent, n)
        sent += n


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = dict(
        kv.split("=", 1) for kv in environ.get("QUERY_STRING", "").split("&") if "=" in kv
    )
    if path == "/echo":
        body = environ["wsgi.input"].read()
        doc = {
            "method": environ["REQUEST_METHOD"],
            "path": path,
            "query": environ.get("QUERY_STRING", ""),
            "host": environ.get("HTTP_HOST"),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "x_test": environ.get("HTTP_X_TEST"),
            "connection": environ.get("HTTP_CONNECTION"),
            "content_type": environ.get("CONTENT_TYPE"),
            "body_length": len(body),
            "body_digest": "%016x" % fnv1a(body),
        }
        out = json.dumps(doc).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(out)))],
        )
        return [out]
    if path in ("/big", "/sized"):
        size = int(query.get("size", "0"))
        headers = [("Content-Type", "application/octet-stream")]
        if path == "/sized":
            headers.append(("Content-Length", str(size)))
        start_response("200 OK", headers)
        return stream(size)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


def failing(status):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"failed"]

    return app


def delayed(inner, seconds):
    def app(environ, start_response):
        time.sleep(seconds)
        return inner(environ, start_response)

    return app


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    opts = dict(a.split("=", 1) for a in sys.argv[2:])
    served = failing(opts["status"] + " Failing") if "status" in opts else app
    if "delay_ms" in opts:
        served = delayed(served, int(opts["delay_ms"]) / 1000.0)
    # Trust the worker's X-Forwarded-For, as a deployment behind resumelb
    # would: REMOTE_ADDR then names the real client.
    server = waitress.create_server(
        served,
        host="127.0.0.1",
        port=port,
        threads=4,
        trusted_proxy="127.0.0.1",
        trusted_proxy_headers="x-forwarded-for x-forwarded-proto",
        trusted_proxy_count=1,
    )
    print("PORT %s" % server.effective_port, flush=True)
    server.run()


if __name__ == "__main__":
    main()
