"""The proxy's authorizer in the lab: many requests with one token at once cost one
decision (one thread, one database query), not one each; a revocation is never served
from a decision made before it."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from servicelab.access import LabAuthorizer
from servicelab.auth import Decision, TokenAuthority, issue_token
from servicelab.db import Database, Project
from servicelab.proxy import AuthError, Principal


class CountingAuthority(TokenAuthority):
    """The real authority on a real database, counting the decisions that needed it."""

    decisions = 0
    #: When set, the first decision waits for it (in its thread) before it starts.
    first_waits_for: threading.Event | None = None

    def decide(self, secret: str, project: str) -> Decision:
        self.decisions += 1
        if self.decisions == 1 and self.first_waits_for is not None:
            assert self.first_waits_for.wait(10)
        return super().decide(secret, project)


@pytest.fixture
def authority(tmp_path: Path) -> CountingAuthority:
    db = Database(f"sqlite:///{tmp_path / 'lab.db'}")
    db.migrate()
    return CountingAuthority(db)


def project_token(authority: TokenAuthority, project: str) -> str:
    with authority.db.session() as session:
        row = Project(name=project)
        session.add(row)
        session.flush()
        return issue_token(session, "project", user_id=None, project_id=row.id).secret


async def ask_at_once(authorizer: LabAuthorizer, token: str, project: str, n: int) -> list:
    asks = [authorizer.authorize(token, project) for _ in range(n)]
    return await asyncio.gather(*asks, return_exceptions=True)


def test_concurrent_requests_share_one_decision(authority: CountingAuthority) -> None:
    token = project_token(authority, "alpha")
    authorizer = LabAuthorizer(authority)
    answers = asyncio.run(ask_at_once(authorizer, token, "alpha", 32))
    assert answers == [Principal(user=None, project="alpha", token_id=answers[0].token_id)] * 32
    assert authority.decisions == 1


def test_a_refusal_is_shared_too_and_not_kept(authority: CountingAuthority) -> None:
    project_token(authority, "alpha")
    authorizer = LabAuthorizer(authority)
    answers = asyncio.run(ask_at_once(authorizer, "slp_not-a-token", "alpha", 8))
    assert all(isinstance(a, AuthError) and a.status == 401 for a in answers)
    assert authority.decisions == 1
    asyncio.run(ask_at_once(authorizer, "slp_not-a-token", "alpha", 1))
    assert authority.decisions == 2  # refusals are asked again: no negative cache here


def test_after_a_revocation_a_new_decision_is_made(authority: CountingAuthority) -> None:
    token = project_token(authority, "alpha")
    authorizer = LabAuthorizer(authority)
    authority.first_waits_for = threading.Event()

    async def main() -> None:
        first = asyncio.ensure_future(ask_at_once(authorizer, token, "alpha", 4))
        deadline = asyncio.get_running_loop().time() + 10
        while not authority.decisions:  # the first decision is under way (in a thread)
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        authority.forget()  # what a revocation does
        # Answered by a decision of their own while the first one is still held up.
        second = await ask_at_once(authorizer, token, "alpha", 4)
        assert not first.done() and authority.decisions == 2
        assert authority.first_waits_for is not None
        authority.first_waits_for.set()
        assert all(isinstance(a, Principal) for a in [*await first, *second])

    asyncio.run(main())


def test_a_decision_left_on_a_closed_loop_is_made_again(authority: CountingAuthority) -> None:
    """A loop closed while a decision was under way (the lab's loop ends with the
    process; a test's loop ends with the test) leaves that decision behind, unfinished:
    the next loop that asks makes its own instead of waiting on one that cannot end."""
    token = project_token(authority, "alpha")
    authorizer = LabAuthorizer(authority)
    authority.first_waits_for = threading.Event()
    old_loop, old_threads = asyncio.new_event_loop(), ThreadPoolExecutor(1)
    old_loop.set_default_executor(old_threads)
    old_loop.create_task(authorizer.authorize(token, "alpha"))
    deadline = time.monotonic() + 10
    while not authority.decisions:  # the first decision is under way (in a thread)
        assert time.monotonic() < deadline
        old_loop.run_until_complete(asyncio.sleep(0.001))
    old_loop.close()
    try:
        answer = asyncio.run(asyncio.wait_for(authorizer.authorize(token, "alpha"), 10))
    finally:
        authority.first_waits_for.set()
        old_threads.shutdown(wait=True)
        gc.collect()  # the old loop's tasks, unfinished: asyncio says so in the test's log
    assert answer == Principal(user=None, project="alpha", token_id=answer.token_id)
    assert authority.decisions == 2
