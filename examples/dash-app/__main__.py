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


#: Loopback on the local runtime (it sets HOST), every address inside a container.
HOST = os.environ.get("HOST", "0.0.0.0")
app.run(host=HOST, port=int(os.environ.get("PORT", "8091")))
