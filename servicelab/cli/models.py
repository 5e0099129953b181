"""`servicelab models deploy|predict`: a model file of the project's data as a service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lab_client.models import predict as predict_v2

from .common import CliError, Exit, JsonOpt, ProjectOpt, environment, print_json, project_of, say
from .services import parse_env, service_url, wait_healthy

app = typer.Typer(
    help="Deploy model files as services (V2 inference protocol) and ask them for predictions.",
    no_args_is_help=True,
)


@app.command()
def deploy(
    key: Annotated[
        str,
        typer.Argument(help="The model file's key, e.g. models/iris.joblib.", show_default=False),
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Service name (default: from the file).")
    ] = None,
    env_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            "-e",
            help="Environment variable KEY=VALUE (repeatable), e.g. MODEL_REQUIREMENTS.",
        ),
    ] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Serve this file from the existing service.")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return at once instead of waiting until ready.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait until the model is loaded.")
    ] = 600.0,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a model file (scikit-learn/XGBoost/LightGBM pickle, skops, MLflow, ONNX or
    a zip of Python code) as a service, and wait until it has loaded."""
    lab = environment(project)
    proj = project_of(lab)
    body = parse_env(env_pairs or [])
    service = lab.lab_handler.lab_api.deploy_model(proj, key, name=name, body=body, update=update)
    if not no_wait:
        service = wait_healthy(lab, proj, service.name, timeout, quiet=as_json)
    if as_json:
        print_json(service)
        return
    url = service_url(service)
    state = "serves" if service.status == "running" else f"is {service.status}:"
    say(f"Model service [bold]{service.name}[/] {state} {key}" + (f" at {url}" if url else ""))
    if url:
        say(f"  V2: POST {url}v2/models/{service.name}/infer   ML Lab: POST {url}predict")


@app.command()
def predict(
    service: Annotated[str, typer.Argument(help="The model service's name.", show_default=False)],
    data: Annotated[
        str | None,
        typer.Option(
            "--json",
            help="Rows '[[5.1, 3.5], ...]', records '[{\"a\": 1}, ...]' or columns "
            "'{\"a\": [1, 2]}' as JSON.",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the JSON from this file.")
    ] = None,
    outputs: Annotated[
        list[str] | None,
        typer.Option("--output", "-o", help="Output to return, e.g. predict_proba (repeatable)."),
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Ask a model service for predictions over the V2 protocol; prints its outputs."""
    if (data is None) == (file is None):
        raise CliError("Give the input with --json '...' or --file FILE.", Exit.USAGE)
    text = data if data is not None else _read(file)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"The input is not JSON: {exc}", Exit.USAGE) from None
    lab = environment(project)
    try:
        result = predict_v2(lab, service, _columns_of_records(value), outputs=outputs)
    except ValueError as exc:
        raise CliError(str(exc), Exit.USAGE) from None
    print_json(result)


def _read(file: Path | None) -> str:
    assert file is not None
    try:
        return file.read_text()
    except OSError as exc:
        raise CliError(f"--file {file}: {exc.strerror}", Exit.USAGE) from None


def _columns_of_records(value: Any) -> Any:
    """Records (a list of objects) become named columns, one V2 input each."""
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return {key: [r.get(key) for r in value] for key in value[0]}
    if not isinstance(value, (list, dict)):
        raise CliError(
            "Give a list of rows, a list of records or an object of columns.", Exit.USAGE
        )
    return value
