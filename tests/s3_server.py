"""moto's S3 server, one request at a time, so that a conditional write is checked and applied as one step.

moto 5.2 honours `If-None-Match: *` and `If-Match` on PutObject, but its threaded server checks
the condition and stores the object without a lock between them: six writers racing on one ETag,
two of them won in 5 of 40 trials here. AWS S3 applies a conditional write atomically (a
concurrent loser gets 412 or 409 ConditionalRequestConflict), and the registry's lease and head
rely on that. Served one request at a time (werkzeug then speaks HTTP/1.0, one connection per
request, so no client holds the server), moto's check and write cannot interleave.

Usage: python -m tests.s3_server HOST PORT
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main(argv: list[str] | None = None) -> None:
    host, port = (argv if argv is not None else sys.argv[1:])[:2]
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, int(port), app, threaded=False, use_reloader=False)


if __name__ == "__main__":
    main()
