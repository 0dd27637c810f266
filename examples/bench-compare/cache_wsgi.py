"""W3's WSGI application: the W1 workload shape in Python. Each process has
an LRU cache of objects keyed by (site, id); a request names its site in
Host (`s17.example`) and its objects in the path (`/17_203_4_88`); a miss
waits MISS_MS (a sleep, as a database or a remote cache would), a hit costs
nothing. The same code runs in resumelb's worker (`--app wsgi:cache_wsgi`),
under granian and under gunicorn.

Environment: CACHE_OBJECTS (default 5000), MISS_MS (default 2),
RLB_W3_STATS (a directory: every 50 ms the process writes its counts of
requests, objects, hits and misses to PID.json there, so that the benchmark
reads the hit rate of each process, whatever serves it).
"""
import json
import os
import threading
import time
from collections import OrderedDict

CACHE_OBJECTS = int(os.environ.get("CACHE_OBJECTS", "5000"))
MISS = float(os.environ.get("MISS_MS", "2")) / 1000.0
STATS_DIR = os.environ.get("RLB_W3_STATS")

_lock = threading.Lock()
_cache = OrderedDict()
_stats = {"requests": 0, "objects": 0, "hits": 0, "misses": 0}
_writer = None


def _touch(key):
    """True on a hit; a miss inserts the key, evicting the oldest."""
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return True
        _cache[key] = None
        if len(_cache) > CACHE_OBJECTS:
            _cache.popitem(last=False)
        return False


def _write_stats():
    path = os.path.join(STATS_DIR, "%d.json" % os.getpid())
    tmp = path + ".tmp"
    last = None
    while True:
        with _lock:
            now = dict(_stats)
        if now != last:
            with open(tmp, "w") as f:
                json.dump(now, f)
            os.replace(tmp, path)
            last = now
        time.sleep(0.05)


def _start_writer():
    # Started in the serving process on its first request (granian and
    # gunicorn may import the module before they fork).
    global _writer
    if STATS_DIR and _writer is None:
        with _lock:
            if _writer is None:
                _writer = threading.Thread(target=_write_stats, daemon=True)
                _writer.start()


def application(environ, start_response):
    _start_writer()
    site = environ.get("HTTP_HOST", "").split(":")[0]
    ids = [p for p in environ.get("PATH_INFO", "/").strip("/").split("_") if p]
    misses = 0
    for i in ids:
        if not _touch((site, i)):
            misses += 1
            time.sleep(MISS)
    with _lock:
        _stats["requests"] += 1
        _stats["objects"] += len(ids)
        _stats["misses"] += misses
        _stats["hits"] += len(ids) - misses
    body = b"ok %d %d\n" % (len(ids) - misses, misses)
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
