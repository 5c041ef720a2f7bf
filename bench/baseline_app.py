"""The baseline: a bare FastAPI app that answers each benchmarked URL with pre-serialised bytes.

`uvicorn --factory baseline_app:create` (with `--app-dir bench`). BENCH_BASELINE_MANIFEST names a JSON file
`{"<path>": "<file holding the body>", ...}`; each path becomes one static GET route returning
`Response(content=<those bytes>, media_type="application/fhir+json")`, the bytes being exactly what the
gateway returned for the benchmarked URL. The runner gives each benchmark its own static path
(`/bench/<name>`), as two searches share the gateway's path and differ only in the query.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response


def _endpoint(body: bytes) -> Callable[[], Response]:
    async def endpoint() -> Response:
        return Response(content=body, media_type="application/fhir+json")

    return endpoint


def create() -> FastAPI:
    manifest = json.loads(Path(os.environ["BENCH_BASELINE_MANIFEST"]).read_text())
    app = FastAPI()
    for path, body_file in manifest.items():
        app.add_api_route(path, _endpoint(Path(body_file).read_bytes()), methods=["GET"])
    return app
