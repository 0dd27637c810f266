"""The trivial WSGI application of bench-compare's W2 Python rows: a tiny
response, as small as the Rust backend's. Run in the worker
(`--app wsgi:hello_wsgi`) or, as a script, under waitress with 4 threads:
it then logs "waitress listening on 127.0.0.1:PORT" on stderr.
"""
import sys

BODY = b"hello\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


if __name__ == "__main__":
    import waitress

    server = waitress.create_server(application, host="127.0.0.1", port=0, threads=4)
    print("waitress listening on 127.0.0.1:%s" % server.effective_port, file=sys.stderr, flush=True)
    server.run()
