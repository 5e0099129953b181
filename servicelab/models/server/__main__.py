"""servicelab's model server: `python <this folder>`, run by the executor as a code service.

From `MODEL_FILE` (a key in the project's data) to a V2 inference API on `$PORT`:
download the file, tell its format from its bytes, install what it needs into this
service's environment, load it, and only then open the port. Any failure ends the
process with a last line `ModelError: <what went wrong>`, which becomes the service's
reason: a model that cannot load never looks healthy.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from detect import UnknownFormat
from fetch import ModelError, log, prepare
from http_api import SERVER, ModelApp, serve
from loaders import load


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        prepared = prepare()
        model = load(prepared)
    except (ModelError, UnknownFormat) as exc:
        if exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"ModelError: {exc}", file=sys.stderr, flush=True)
        return 1
    name = os.environ.get("MODEL_NAME") or "model"
    info = {
        "name": name,
        "format": prepared.format.format,
        "framework": prepared.format.framework,
        "frameworkVersion": model.version or prepared.format.framework_version,
        "runtime": model.framework,
        "file": prepared.key,
        "server": SERVER,
        "python": sys.version.split()[0],
    }
    log(f"loaded {prepared.key}")
    # All interfaces in servicelab's runtime image (the lab reaches the container over the
    # project's network); loopback for a local process, on the lab's own machine.
    in_runtime_image = bool(os.environ.get("_RESOURCES_PATH"))
    host = os.environ.get("MODEL_HOST") or ("0.0.0.0" if in_runtime_image else "127.0.0.1")
    serve(ModelApp(name, model, info), host, int(os.environ.get("PORT", "8091")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
