"""servicelab lint: each rule of the service guide, the parser's corners, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from servicelab.lint import RULES, Severity, lint_file, lint_text, main, parse

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
ARG BASE_IMAGE=ubuntu:24.04
FROM ${BASE_IMAGE}
ENV _APP_PATH=/app \\
    GREETING=Hello
VOLUME /data
EXPOSE 8080
HEALTHCHECK CMD ["python3", "-c", "print(1)"]
CMD ["python3", "-m", "app"]
"""


def codes(text: str) -> list[str]:
    return [finding.code for finding in lint_text(text)]


def test_a_good_dockerfile_has_no_findings() -> None:
    assert lint_text(GOOD) == []


@pytest.mark.parametrize(
    "dockerfile",
    [
        ROOT / "examples" / "fastapi-service" / "Dockerfile",
        ROOT / "images" / "runtime" / "Dockerfile",
        ROOT / "Dockerfile",
    ],
    ids=["example", "runtime", "lab"],
)
def test_shipped_dockerfiles_pass(dockerfile: Path) -> None:
    assert lint_file(dockerfile) == []


def test_every_rule_is_described() -> None:
    assert all(code.startswith("SL") and text for code, (_, text) in RULES.items())


def test_missing_expose_is_an_error() -> None:
    findings = lint_text(GOOD.replace("EXPOSE 8080\n", ""))
    assert [(f.code, f.severity, f.line) for f in findings] == [("SL001", Severity.ERROR, 2)]
    assert "EXPOSE" in findings[0].message


def test_missing_or_disabled_healthcheck_is_a_warning() -> None:
    without = GOOD.replace('HEALTHCHECK CMD ["python3", "-c", "print(1)"]\n', "")
    assert codes(without) == ["SL002"]
    assert lint_text(without)[0].severity is Severity.WARNING
    disabled = GOOD.replace('HEALTHCHECK CMD ["python3", "-c", "print(1)"]', "HEALTHCHECK NONE")
    assert codes(disabled) == ["SL002"]


def test_shell_form_cmd_and_entrypoint_are_warnings() -> None:
    text = GOOD.replace('CMD ["python3", "-m", "app"]', "ENTRYPOINT python3 -m app\nCMD --flag")
    assert codes(text) == ["SL003", "SL003"]


def test_single_quoted_json_is_explained() -> None:
    findings = lint_text(GOOD.replace('CMD ["python3", "-m", "app"]', "CMD ['python3', 'app']"))
    assert [f.code for f in findings] == ["SL003"]
    assert "double quotes" in findings[0].message


@pytest.mark.parametrize("base", ["ubuntu", "ubuntu:latest", "docker.io/library/ubuntu"])
def test_untagged_or_latest_base_is_a_warning(base: str) -> None:
    assert codes(GOOD.replace("${BASE_IMAGE}", base)) == ["SL004"]


def test_base_from_arg_without_default_is_a_warning() -> None:
    assert codes(GOOD.replace("ARG BASE_IMAGE=ubuntu:24.04", "ARG BASE_IMAGE")) == ["SL004"]


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("debian:bookworm", ["SL005"]),
        ("registry.example.com:5000/team/python:3.12", ["SL005"]),
        ("registry.example.com:5000/mirror/ubuntu:24.04", []),
        ("servicelab/runtime:1.0", []),
        ("ubuntu@sha256:" + "a" * 64, []),
    ],
)
def test_non_ubuntu_base_is_a_note(base: str, expected: list[str]) -> None:
    assert codes(GOOD.replace("${BASE_IMAGE}", base)) == expected
    if expected:
        assert lint_text(GOOD.replace("${BASE_IMAGE}", base))[0].severity is Severity.INFO


def test_parameter_without_default_is_a_warning() -> None:
    text = GOOD.replace('CMD ["python3", "-m", "app"]', "CMD exec serve --model $MODEL_NAME")
    assert codes(text) == ["SL003", "SL006"]
    assert "ENV MODEL_NAME=" in lint_text(text)[1].message
    # A default in the reference, an ENV default or a LAB_* variable is fine.
    for command in [
        'CMD ["sh", "-c", "serve ${MODEL_NAME:-tiny}"]',
        'CMD ["sh", "-c", "serve $GREETING $LAB_PROJECT"]',
    ]:
        assert codes(GOOD.replace('CMD ["python3", "-m", "app"]', command)) == []


def test_internal_looking_variable_without_underscore_is_a_note() -> None:
    text = GOOD.replace("_APP_PATH=/app", "APP_PATH=/app PYTHONPATH=/app JAVA_HOME=/opt/j")
    findings = lint_text(text)
    assert [(f.code, f.severity) for f in findings] == [("SL007", Severity.INFO)]
    assert "_APP_PATH" in findings[0].message


@pytest.mark.parametrize("volume", ["/models", '["/data", "/var/lib/app"]'])
def test_volume_outside_data_is_a_warning(volume: str) -> None:
    assert codes(GOOD.replace("VOLUME /data", f"VOLUME {volume}")) == ["SL008"]


def test_volume_under_data_is_fine() -> None:
    assert codes(GOOD.replace("VOLUME /data", 'VOLUME ["/data/models"]')) == []


@pytest.mark.parametrize(
    "line",
    [
        "ENV API_TOKEN=abc123",
        "ENV DB_PASSWORD hunter2",
        'ENV OTHER=1 AWS_SECRET="x y"',
        "ARG SIGNING_KEY=abc",
        "ENV LAB_API_TOKEN=abc",
    ],
)
def test_secrets_are_errors(line: str) -> None:
    findings = [f for f in lint_text(GOOD + line + "\n") if f.code == "SL009"]
    assert len(findings) == 1
    assert findings[0].severity is Severity.ERROR
    assert findings[0].line == GOOD.count("\n") + 1
    # The finding names the key but never repeats the value.
    assert "abc" not in findings[0].message and "hunter2" not in findings[0].message


def test_secret_names_without_values_are_fine() -> None:
    assert codes(GOOD + "ARG BUILD_TOKEN\nENV API_KEY=\n") == []


def test_debian_frontend_in_env_and_lab_defaults_are_warnings() -> None:
    text = GOOD + "ENV DEBIAN_FRONTEND=noninteractive\nENV LAB_PROJECT=demo\n"
    assert codes(text) == ["SL010", "SL011"]


def test_multi_stage_rules_apply_to_the_final_stage() -> None:
    text = (
        "FROM ubuntu AS build\n"
        "VOLUME /cache\n"
        "ENV BUILD_TOKEN=in-the-file\n"
        "RUN make\n"
        "FROM ubuntu:24.04\n"
        "EXPOSE 8080\n"
        'HEALTHCHECK CMD ["true"]\n'
        'CMD ["app"]\n'
    )
    # The build stage's base and VOLUME are not the image's; its secret is still in the file.
    assert [(f.code, f.line) for f in lint_text(text)] == [("SL009", 3)]
    # EXPOSE only in a build stage does not count.
    text = "FROM ubuntu:24.04 AS build\nEXPOSE 80\nFROM ubuntu:24.04\nHEALTHCHECK CMD true\n"
    assert [(f.code, f.line) for f in lint_text(text)] == [("SL001", 3)]


def test_a_stage_from_an_earlier_stage_inherits_it() -> None:
    text = (
        "FROM ubuntu AS base\n"
        "VOLUME /cache\n"
        "EXPOSE 8080\n"
        "FROM base AS app\n"
        'HEALTHCHECK CMD ["true"]\n'
        "FROM app\n"
        'CMD ["app"]\n'
    )
    # EXPOSE and HEALTHCHECK come from earlier stages; so do the VOLUME and the base image.
    assert [(f.code, f.line) for f in lint_text(text)] == [("SL004", 1), ("SL008", 2)]


def test_the_guides_custom_image_pattern_passes() -> None:
    text = (
        "FROM servicelab/runtime:1.0\n"
        "COPY ml-service /workspace/ml-service\n"
        "ENV EXECUTE_CODE=/workspace/ml-service\n"
        "RUN python /resources/scripts/execute_code.py --requirements-only\n"
        'CMD ["python", "/resources/scripts/execute_code.py", "--code-only"]\n'
    )
    # EXPOSE and HEALTHCHECK are inherited from the runtime image.
    assert codes(text) == []


def test_continuations_comments_and_escape_directive() -> None:
    text = (
        "# escape=`\n"
        "FROM ubuntu:24.04\n"
        "# a comment\n"
        "ENV A=1 `\n"
        "  # a comment inside the continuation\n"
        "\n"
        "  SECRET_KEY=value\n"
        "EXPOSE 80\n"
        'HEALTHCHECK CMD ["true"]\n'
        'CMD ["app"]\n'
    )
    findings = lint_text(text)
    assert [(f.code, f.line) for f in findings] == [("SL009", 4)]
    doc = parse(text)
    assert doc.instructions[1].args == "A=1 SECRET_KEY=value"


def test_heredoc_bodies_are_not_instructions() -> None:
    text = GOOD + "RUN <<EOF\nEXPOSE is not an instruction here\nFOO bar\nEOF\n"
    assert codes(text) == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no FROM"),
        ("RUN echo hi\nFROM ubuntu:24.04\n", "before the first FROM"),
        ("FROM ubuntu:24.04\nEXPOZE 80\n", "unknown instruction"),
        ("FROM ubuntu:24.04\nRUN <<EOF\necho\n", "never closed"),
    ],
)
def test_broken_dockerfiles_say_what_is_wrong(text: str, fragment: str) -> None:
    findings = [f for f in lint_text(text) if f.code == "SL000"]
    assert findings and fragment in findings[0].message
    assert findings[0].severity is Severity.ERROR


def test_cli_prints_like_ruff_and_exits_1_on_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian\nCMD python app.py\n")
    assert main([str(dockerfile)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{dockerfile}:1: SL001 [error] " in out[0]
    assert any(line.startswith(f"{dockerfile}:2: SL003 [warning] ") for line in out)
    assert out[-1] == "Found 1 error(s), 3 warning(s), 1 note(s)."


def test_cli_passes_with_warnings_unless_strict(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM ubuntu:24.04\nEXPOSE 80\n")
    assert main([str(tmp_path)]) == 0  # a folder means its Dockerfile
    assert main(["--strict", str(tmp_path)]) == 1
    assert main(["--strict", "--ignore", "sl002", str(tmp_path)]) == 0


def test_cli_all_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text(GOOD)
    assert main([str(tmp_path / "Dockerfile")]) == 0
    assert capsys.readouterr().out.strip() == "All checks passed!"


def test_cli_bad_input_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--ignore", "SL999", str(tmp_path)]) == 2
    assert "unknown rule code" in capsys.readouterr().err
    assert main(["--no-such-option"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    (tmp_path / "Dockerfile").write_bytes(b"\xff\xfe\x00")
    assert main([str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err
