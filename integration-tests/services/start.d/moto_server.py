"""The S3 emulator of the tests: moto's server, with conditional writes made atomic.

moto checks `If-Match` and `If-None-Match` and then writes, in two steps, on a threaded
server: two conditional writes of one object that arrive together can both pass the
check, so two clients would both create the same lock object. Amazon S3 applies a
conditional write atomically, and the lock algorithm relies on that. This wrapper runs
every conditional PUT, POST and DELETE one at a time (other requests stay concurrent), so
the emulator behaves as the service it stands for.

Two more races are closed here. When an object is overwritten or deleted, moto closes the
buffer of the version it replaces at once, while other requests may still be answering
from that version (a GET reading its body, a PUT computing its ETag); they then fail with
500 "I/O operation on closed file". Replaced versions are left to the garbage collector
instead, which frees them when the last request holding one is done. And an ETag is
computed on first use by reading the shared buffer; two requests doing that together
could interleave their reads, so it is computed under the object's lock.

Usage: python moto_server.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import FakeKey
from werkzeug.serving import run_simple

CONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")
WRITES = ("PUT", "POST", "DELETE")


def atomic_conditional_writes(app):
    lock = threading.Lock()

    def serve(environ, start_response):
        conditional = environ.get("REQUEST_METHOD") in WRITES and any(
            name in environ for name in CONDITIONS
        )
        if not conditional:
            return app(environ, start_response)
        with lock:
            # The whole response is produced inside the lock: the check and the write.
            return [b"".join(app(environ, start_response))]

    return serve


def keep_replaced_versions_readable():
    def dispose(self, garbage=False):
        self.disposed = True

    def etag(self, compute=FakeKey.etag.fget):
        with self.lock:
            return compute(self)

    FakeKey.dispose = dispose
    FakeKey.etag = property(etag)


def main():
    keep_replaced_versions_readable()
    host, port = sys.argv[1], int(sys.argv[2])
    dispatcher = DomainDispatcherApplication(create_backend_app)
    run_simple(
        host,
        port,
        atomic_conditional_writes(dispatcher),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
