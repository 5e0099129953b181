"""The README's first session, run line by line as it is written against a real lab.

The commands are the README's `$ ` lines between the first-session markers; only the
endpoint placeholder (http://127.0.0.1:8080) is replaced by the test lab's URL. The
password the login line prompts for comes on stdin, as a person would type it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .labtools import ADMIN_PASSWORD, ROOT, LabProcess

README = ROOT / "README.md"
START, END = "<!-- first-session:start -->", "<!-- first-session:end -->"
ENDPOINT_PLACEHOLDER = "http://127.0.0.1:8080"


def session_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, "README.md lost its first-session markers"
    section = text.split(START, 1)[1].split(END, 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("$ ")]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabProcess]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    started = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    yield started
    started.stop()


def test_the_readme_session_runs_as_written(lab: LabProcess, tmp_path: Path) -> None:
    commands = session_commands()
    assert any(c.startswith("servicelab login") for c in commands)
    assert any("services deploy" in c for c in commands)
    assert any("services rm" in c for c in commands)
    script = "\n".join(c.replace(ENDPOINT_PLACEHOLDER, lab.url) for c in commands)
    # The `servicelab` of this checkout, whichever Python runs the tests.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "servicelab"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m servicelab "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "SERVICELAB_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        SERVICELAB_CONFIG=str(tmp_path / "config.json"),
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-x", "-c", script],
        input=ADMIN_PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{lab.log()}"
    assert re.search(r'"greeting": "Hello from a code service"', done.stdout), done.stdout
    assert f"{lab.url}/api/projects/demo/services/hello/8091/" in done.stdout
    assert ADMIN_PASSWORD not in done.stdout + done.stderr.replace(ADMIN_PASSWORD + "\n", "")
