"""FastAPI with /docs served offline (Swagger UI's files from the fastapi-offline package,
no CDN). Deploy with the route prefix kept (--keep-prefix): with root_path set, Starlette
routes (and mounts static files) by the path behind root_path, which is $LAB_SERVICE_URL."""

import os

import uvicorn
from fastapi_offline import FastAPIOffline

app = FastAPIOffline(
    title="servicelab example", root_path=os.environ["LAB_SERVICE_URL"].rstrip("/")
)


@app.get("/")
def root() -> dict[str, str]:
    return {"hello": "world", "docs": "docs"}


@app.get("/add")
def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


#: Loopback on the local runtime (it sets HOST), every address inside a container.
HOST = os.environ.get("HOST", "0.0.0.0")
uvicorn.run(
    app,
    host=HOST,
    port=int(os.environ.get("PORT", "8091")),
    access_log=False,
)
