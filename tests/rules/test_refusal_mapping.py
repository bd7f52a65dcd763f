"""The domain and the store say what went wrong, with no HTTP status; each edge maps that by its one table: the
HTTP edges to the status and JSON error they have always answered, the CLI to an exit code."""

from __future__ import annotations

import inspect

import pytest

from relay.cli.refusals import exit_code_of
from relay.domain import errors
from relay.domain.errors import (
    AtSizeBound,
    BadParameter,
    BadSubscriber,
    BodyTimeout,
    Forbidden,
    Invalid,
    Malformed,
    NotFound,
    Rejected,
    SubscriberExists,
    Throttled,
    TooComplex,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnknownDelivery,
    UnknownSubscriber,
    UnsupportedType,
)
from relay.http.errors import error_body, status_of
from relay.store import failures
from relay.store.failures import BackupRefused, NoDatabase, StoreError
from relay.store.sealing import WrongSecretKey

#: The statuses every refusal was answered with when each refusal carried its own (before issue 24).
ANSWERED: dict[type[Rejected], int] = {
    Unauthorized: 401,
    BodyTimeout: 408,
    TooLarge: 413,
    TooComplex: 413,
    UnsupportedType: 415,
    Malformed: 400,
    Invalid: 422,
    Unavailable: 503,
    AtSizeBound: 503,
    BadParameter: 400,
    BadSubscriber: 400,
    Forbidden: 403,
    NotFound: 404,
    UnknownSubscriber: 404,
    UnknownDelivery: 404,
    SubscriberExists: 409,
}


def refusals() -> list[type[Rejected]]:
    return [kind for _, kind in inspect.getmembers(errors, inspect.isclass) if issubclass(kind, Rejected)]


def test_no_refusal_of_the_domain_or_failure_of_the_store_carries_an_http_status() -> None:
    store_errors = [kind for _, kind in inspect.getmembers(failures, inspect.isclass) if issubclass(kind, Exception)]
    assert {NoDatabase, BackupRefused, StoreError} <= set(store_errors)
    for kind in [*refusals(), *store_errors]:
        assert not hasattr(kind, "status"), kind
        assert not hasattr(kind, "body"), kind


@pytest.mark.parametrize("kind", [pytest.param(kind, id=kind.__name__) for kind in ANSWERED])
def test_the_http_edges_answer_each_refusal_with_the_status_it_always_had(kind: type[Rejected]) -> None:
    assert status_of(kind()) == ANSWERED[kind]


def test_every_refusal_has_its_status_checked_here() -> None:
    assert set(refusals()) - {Rejected, Throttled} == set(ANSWERED)
    assert status_of(Throttled(3.0)) == 429
    assert status_of(Rejected()) == 400


def test_the_json_error_names_the_outcome_the_detail_and_where_the_body_was_wrong() -> None:
    assert error_body(UnknownSubscriber("no subscriber is named 'x'")) == {
        "error": "not_found",
        "detail": "no subscriber is named 'x'",
    }
    assert error_body(Invalid("not a date", path="/Response/Time", rule="type")) == {
        "error": "invalid",
        "detail": "not a date",
        "path": "/Response/Time",
        "rule": "type",
    }
    assert error_body(AtSizeBound())["error"] == "size_bound"


def test_the_cli_ends_a_refusal_with_exit_1_and_a_key_that_opens_nothing_with_exit_2() -> None:
    assert exit_code_of(UnknownSubscriber("gone")) == 1
    assert exit_code_of(BadSubscriber("bad")) == 1
    assert exit_code_of(NoDatabase("/tmp/none.db")) == 1
    assert exit_code_of(BackupRefused("exists")) == 1
    assert exit_code_of(WrongSecretKey("no key opens it")) == 2
