"""Schemathesis over the lab's whole OpenAPI document, as an admin: whatever it sends, the
lab never answers with a server error, and every documented answer matches its schema.

Bounded for CI: a few examples per operation, a deadline per call. The lab is a real
`servicelab serve` (local runtime) of its own, so that what the fuzzer deletes or creates
touches nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from .labtools import LabProcess, stop_local_services

#: Examples per operation: enough to try bounds, odd types and missing fields.
EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzzed_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    with lab.client() as api:
        assert api.post("/api/projects", json={"name": "fuzz"}).status_code == 201
    yield lab
    lab.stop()
    stop_local_services(data_dir)


@pytest.mark.timeout(600)
def test_no_server_error_and_answers_match_the_schema(fuzzed_lab: LabProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_lab.url}/api/openapi.json")
    # A user API token: the fuzzer's log-outs end sessions, not API tokens.
    with fuzzed_lab.client() as api:
        token = api.get("/api/auth/users/admin/token").json()["data"]
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            # Mostly in the one project that exists, so that requests get past the lookup
            # (but never deleting it, which would end that).
            params = case.path_parameters or {}
            if "project" in params and not (case.method == "DELETE" and len(params) == 1):
                params["project"] = "fuzz"
            response = case.call(base_url=fuzzed_lab.url, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            try:
                case.validate_response(
                    response, checks=[not_a_server_error, response_schema_conformance]
                )
            except Exception as exc:  # collect them all, then fail once with every one
                failures.append(f"{case.method} {case.formatted_path}: {exc}")

        check()
    assert operations >= 30
    print(f"{operations} operations, answers by status: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 3 * operations
    assert failures == [], "\n\n".join(failures[:20])
