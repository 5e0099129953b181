"""Dash as a code service, with the route prefix removed (the default): Dash serves from /
(routes_pathname_prefix) and the browser asks below $LAB_SERVICE_URL
(requests_pathname_prefix)."""

import os

from dash import Dash, Input, Output, dcc, html

app = Dash(
    __name__,
    routes_pathname_prefix="/",
    requests_pathname_prefix=os.environ["LAB_SERVICE_URL"],
    serve_locally=True,
)
app.layout = html.Div(
    [html.H1("Dash behind servicelab"), dcc.Input(id="name", value="world"), html.P(id="out")]
)


@app.callback(Output("out", "children"), Input("name", "value"))
def greet(name: str) -> str:
    return f"Hello, {name}!"


IN_CONTAINER = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
app.run(host="0.0.0.0" if IN_CONTAINER else "127.0.0.1", port=int(os.environ.get("PORT", "8091")))
