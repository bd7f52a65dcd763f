"""The converters a compiled schema calls on a leaf's text, one per facet combination (relay/validate/simple.py
picks them; the specialised ones are the hot cases).

Plain functions, bound to their facets with `functools.partial` by the compiler rather than closures: a compiled
schema then pickles, so `cos-relay serve` reads the one a previous process left (relay/validate/schema.py) and
never imports xmlschema.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from relay.validate.lexical import Check, Group
from relay.validate.model import EMPTY, CheckFailed, Converter, describe

#: A value assertion: whether it holds for the text, and the rule it breaks when not.
Assertion = tuple[Callable[[str], bool], Callable[[str], str]]
Match = Callable[[str], re.Match[str] | None]


def mismatch(label: str, text: str, shown: str) -> CheckFailed:
    return CheckFailed(f"value {describe(text)} does not match the {label} pattern {shown}", 1)


def either(first: Converter, second: Converter, text: str) -> object:
    """A union of two members: the first that accepts the text, else the error that came closest."""
    try:
        return first(text)
    except CheckFailed as error:
        try:
            return second(text)
        except CheckFailed as other:
            raise (other if other.stage > error.stage else error) from None


def any_of(members: tuple[Converter, ...], text: str) -> object:
    """A union: the first member that accepts the text, else the error that came closest."""
    best: CheckFailed | None = None
    for member in members:
        try:
            return member(text)
        except CheckFailed as err:
            if best is None or err.stage > best.stage:
                best = err
    assert best is not None
    raise best


def one_of(allowed: frozenset[str], check: Check, text: str) -> object:
    """EventName, State: a closed set of preserved strings."""
    if text in allowed:
        return text
    check(text, text)  # raises with the full wording
    return text


def bounded(limit: int, check: Check, text: str) -> object:
    """Free text (Message, UserData, object keys): a preserved string of bounded length."""
    if len(text) > limit:
        check(text, text)  # raises with the full wording
    return text


def matching(match: Match, label: str, shown: str, text: str) -> object:
    """IDs, Tag: one pattern on a preserved string."""
    if match(text) is None:
        raise mismatch(label, text, shown)
    return text


def matching_asserted(match: Match, label: str, shown: str, assertion: Assertion, text: str) -> object:
    """Timestamps: one pattern on a preserved string, and an assertion."""
    if match(text) is None:
        raise mismatch(label, text, shown)
    holds, rule = assertion
    if not holds(text):
        raise CheckFailed(rule(text), 3)
    return text


def general(
    label: str,
    normalize: Callable[[str], str] | None,
    groups: tuple[Group, ...],
    builtin: Callable[[str], object],
    checks: tuple[Check, ...],
    assertions: tuple[Assertion, ...],
    stringy: bool,
    text: str,
) -> object:
    """Any other combination: whitespace, every pattern step, the builtin, its checks and assertions."""
    if normalize is not None:
        text = normalize(text)
    for regexes, shown in groups:
        for regex in regexes:
            if regex.match(text) is not None:
                break
        else:
            raise mismatch(label, text, shown)
    value = builtin(text)
    for check in checks:
        check(value, text)
    for holds, rule in assertions:  # string types only: the value is the text
        if not holds(text):
            raise CheckFailed(rule(text), 3)
    if stringy and not text:
        return EMPTY
    return value
