"""Model files -> model services (the Open Inference Protocol).

`deploy.py` turns a model file of the project's data into an ordinary code service: its
code is the model server in `server/` (standard library only, run by the executor like any
code service, in the same sandbox or container), told by `MODEL_FILE` which file to serve.
`server/detect.py` tells a file's format from its bytes; the lab uses it to refuse a file
that is no model (400) before anything starts.
"""
