"""Gradio as a code service, with the route prefix removed (the default): Gradio serves
from / and builds its URLs from root_path, which is $LAB_SERVICE_URL."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402


def greet(name: str) -> str:
    return f"Hello, {name}!"


demo = gr.Interface(fn=greet, inputs=gr.Textbox(label="name"), outputs=gr.Textbox(label="greeting"))
#: Loopback on the local runtime (it sets HOST), every address inside a container.
HOST = os.environ.get("HOST", "0.0.0.0")
demo.launch(
    server_name=HOST,
    server_port=int(os.environ.get("PORT", "8091")),
    root_path=os.environ["LAB_SERVICE_URL"].rstrip("/"),
)
