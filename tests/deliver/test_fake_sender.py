"""The fake sender the rule tests use answers exactly as the real one does, for every kind of answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.deliver.client import Sender
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt
from tests.fakes import FakeClock, FakeSender, subscriber
from tests.live import free_port
from tests.sink import Sink

pytestmark = pytest.mark.anyio

POLICY = AddressPolicy.from_setting("127.0.0.0/8")
#: Path on both subscribers, and the attempt timeout.
CASES = [
    ("/ok", 5.0),
    ("/fail", 5.0),
    ("/gone", 5.0),
    ("/redirect", 5.0),
    ("/throttle/120", 5.0),
    ("/unavailable/30", 5.0),
    ("/missing", 5.0),
    ("/hang", 0.3),
]


def comparable(attempt: Attempt) -> tuple[object, ...]:
    """Everything but the duration, which only the fake clock decides."""
    return attempt.outcome, attempt.status, attempt.error, attempt.response_body, attempt.retry_after


@pytest.fixture
async def real() -> AsyncIterator[Sender]:
    async with Sender(POLICY) as sender:
        yield sender


@pytest.fixture
async def fake() -> AsyncIterator[FakeSender]:
    async with FakeSender(subscriber, policy=POLICY, clock=FakeClock()) as sender:
        assert isinstance(sender, FakeSender)
        yield sender


@pytest.mark.parametrize(("path", "timeout"), CASES)
async def test_the_fake_gives_the_attempt_the_real_sender_gives(
    sink: Sink, real: Sender, fake: FakeSender, path: str, timeout: float
) -> None:
    sent = await real.send(f"{sink.url}{path}", b"{}", {}, timeout=timeout)
    faked = await fake.send(f"{sink.url}{path}", b"{}", {}, timeout=timeout)
    assert comparable(faked) == comparable(sent)
    assert [request.path for request in fake.requests] == [path]


async def test_a_refused_connection_is_the_same_connection_error(real: Sender, fake: FakeSender) -> None:
    sent = await real.send(f"http://127.0.0.1:{free_port()}/refused", b"{}", {}, timeout=5)
    faked = await fake.send(f"http://127.0.0.1:{free_port()}/refused", b"{}", {}, timeout=5)
    assert comparable(faked) == comparable(sent)


async def test_a_forbidden_destination_is_refused_by_both_without_a_request(real: Sender, fake: FakeSender) -> None:
    sent = await real.send("http://10.0.0.1/ok", b"{}", {}, timeout=5)
    faked = await fake.send("http://10.0.0.1/ok", b"{}", {}, timeout=5)
    assert comparable(faked) == comparable(sent)
    assert fake.requests == []


async def test_a_slow_answer_spends_fake_time_and_times_out_at_the_deadline() -> None:
    clock = FakeClock()
    started = clock()
    async with FakeSender(subscriber, policy=POLICY, clock=clock) as fake:
        quick = await fake.send("http://127.0.0.1/slow/2", b"{}", {}, timeout=5)
        late = await fake.send("http://127.0.0.1/slow/10", b"{}", {}, timeout=5)
    assert (quick.status, quick.duration) == (200, 2)
    assert (late.outcome.value, late.status, late.duration) == ("timeout", None, 5)
    assert (clock() - started).total_seconds() == 7
