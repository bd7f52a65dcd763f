"""How a token given is compared with the one expected (`tokens_match`, in constant time), and how much randomness
a token has, estimated conservatively from its text alone.

A token an operator configures is only as strong as the way it was made, which its text cannot show: the
estimate assumes each character was drawn at random from the smallest alphabet that holds all of them
(decimal digits; hex digits; else lower case, upper case, digits, ``-`` and ``_``, blanks, other symbols, by
class), and counts none of the characters that repeat what came before (the same character again, a run like
``abc`` or ``123`` going on, a pair of characters seen earlier). A generated token (`secrets.token_urlsafe(32)`,
43 characters) is about 250 bits; ``7351`` is about 13.
"""

from __future__ import annotations

import hmac
import math
import string

#: What a token an operator configures must have at least: beyond guessing, online or offline.
MIN_BITS = 128

_HEX = frozenset(string.hexdigits)
_CLASSES = (
    (frozenset(string.ascii_lowercase), 26),
    (frozenset(string.ascii_uppercase), 26),
    (frozenset(string.digits), 10),
    (frozenset("-_"), 2),  # the other characters of URL-safe base64
    (frozenset(string.whitespace), 1),  # between words, not a random symbol
)
_COVERED = frozenset().union(*(members for members, _ in _CLASSES))
#: Anything else (other punctuation, spaces, letters beyond ASCII) as one class of the printable symbols.
_OTHER = 32


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an absent or empty token never matches."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def alphabet_size(token: str) -> int:
    """The smallest alphabet, by class, that holds every character of ``token`` (``-`` between decimal or hex
    digits, as in a UUID, is a separator: see `estimated_bits`)."""
    chars = set(token)
    digits = chars - {"-"}
    if digits and digits <= set(string.digits):
        return 10
    if (
        digits
        and digits <= _HEX
        and (digits.isdisjoint(string.ascii_lowercase) or digits.isdisjoint(string.ascii_uppercase))
    ):
        return 16
    size = sum(count for members, count in _CLASSES if not chars.isdisjoint(members))
    return size + (_OTHER if chars - _COVERED else 0)


def fresh_characters(token: str) -> int:
    """How many characters of ``token`` do not repeat or continue what came before them."""
    fresh = 0
    for index, char in enumerate(token):
        before = token[index - 1] if index else None
        if before is not None:
            step = ord(char) - ord(before)
            if step == 0:
                continue
            if index >= 2 and abs(step) == 1 and ord(before) - ord(token[index - 2]) == step:
                continue
            if token[index - 1 : index + 1] in token[:index]:
                continue
        fresh += 1
    return fresh


def estimated_bits(token: str) -> float:
    """A conservative estimate of the bits of randomness in ``token`` (0 for an empty one)."""
    size = alphabet_size(token)
    counted = token.replace("-", "") if size <= 16 else token
    return fresh_characters(counted) * math.log2(size) if counted else 0.0


def weakness(token: str) -> str | None:
    """Why ``token`` is too weak to configure, in a phrase that says how to make a good one; None if it is not.

    Never quotes the token: the phrase ends up in error messages and logs.
    """
    bits = estimated_bits(token)
    if bits >= MIN_BITS:
        return None
    return (
        f"too weak: about {bits:.0f} bits of randomness, at least {MIN_BITS} needed; use a random token of 32 bytes"
        " or more, e.g. the output of `openssl rand -hex 32` (64 hex digits)"
    )
