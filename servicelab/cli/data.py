"""`servicelab data upload|download|ls|rm`: the project's versioned files."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from lab_client.environment import zip_folder
from servicelab.files.keys import DATA_TYPES

from .common import (
    CliError,
    Exit,
    JsonOpt,
    ProjectOpt,
    environment,
    err_console,
    print_json,
    project_of,
    say,
    size,
    table,
    when,
)

app = typer.Typer(help="The project's data: versioned files under keys.", no_args_is_help=True)

KeyArg = Annotated[str, typer.Argument(help="A key: datasets/a.csv (latest) or datasets/a.csv.v2.")]


@contextmanager
def progress_bar(what: str, total: int | None, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr (terminals only); yields the callback for byte counts."""
    console = err_console()
    if quiet or not console.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _data_type(value: str) -> str:
    normalized = value.strip().lower()
    normalized = normalized if normalized.endswith("s") else normalized + "s"
    if normalized not in DATA_TYPES:
        raise CliError(f"--type {value!r}: use one of {', '.join(DATA_TYPES)}.", Exit.USAGE)
    return normalized


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(help="A file, or a folder (uploaded as a .zip).")],
    data_type: Annotated[
        str, typer.Option("--type", "-t", help=f"One of {', '.join(DATA_TYPES)}.")
    ] = "datasets",
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="File name in the lab (default: local).")
    ] = None,
    no_versioning: Annotated[
        bool, typer.Option("--no-versioning", help="Replace older versions instead of adding one.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a file or folder; prints its key (use it as EXECUTE_CODE or with get_file)."""
    kind = _data_type(data_type)
    if not path.exists():
        raise CliError(f"{path}: no such file or folder.", Exit.USAGE)
    lab = environment(project)
    project_of(lab)
    with tempfile.TemporaryDirectory(prefix="servicelab-upload-") as tmp:
        source = path
        file_name = name or path.resolve().name
        if path.is_dir():
            file_name = name or f"{path.resolve().name}.zip"
            source = Path(tmp) / "upload.zip"
            zip_folder(path, source)
        with progress_bar(f"Uploading {file_name}", source.stat().st_size, as_json) as advance:
            key = lab.upload_file(
                source, kind, file_name, versioning=not no_versioning, progress=advance
            )
    if as_json:
        print_json({"key": key})
    else:
        typer.echo(key)


@app.command()
def download(
    key: KeyArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File or folder to write to (default: ./NAME)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a file; its sha256 is checked against the lab's before it is kept."""
    lab = environment(project)
    info = lab.lab_handler.lab_api.get_file_info(project_of(lab), key)
    base = str(info.name).rsplit("/", 1)[-1]
    target = output or Path(base)
    if target.is_dir():
        target = target / base
    if target.exists() and not force:
        raise CliError(f"{target} exists: add --force to overwrite it, or give -o.", Exit.USAGE)
    with progress_bar(f"Downloading {info.key}", info.get("size"), as_json) as advance:
        lab.download_file(info.key, target, progress=advance)
    if as_json:
        print_json({"key": info.key, "path": str(target), "sha256": info.get("hash")})
    else:
        say(f"{info.key} -> {target} ({size(info.get('size'))}, sha256 checked)")


@app.command("ls")
def list_files(
    data_type: Annotated[str | None, typer.Option("--type", "-t", help="Only this type.")] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Only keys starting with this.")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The project's files (latest version of each)."""
    lab = environment(project)
    files = lab.lab_handler.lab_api.get_files(
        project_of(lab), _data_type(data_type) if data_type else None, prefix
    )
    if as_json:
        print_json(files)
        return
    table(
        ["KEY", "VERSION", "SIZE", "MODIFIED", "BY"],
        [
            (
                f.key,
                f.get("version"),
                size(f.get("size")),
                when(f.get("modifiedAt")),
                f.get("modifiedBy"),
            )
            for f in files
        ],
    )


@app.command("rm")
def remove(key: KeyArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Delete one version (a versioned key) or all versions of a file."""
    lab = environment(project)
    deleted = lab.lab_handler.lab_api.delete_file(project_of(lab), key)
    if as_json:
        print_json({"deleted": deleted})
    else:
        say(f"Deleted {', '.join(deleted) or key}.")
