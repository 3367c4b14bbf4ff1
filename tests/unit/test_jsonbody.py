"""The validate_json check (gateway/jsonbody.py): what passes, what is refused, fed in any pieces."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from gateway.errors import InvalidJson
from gateway.jsonbody import MAX_DEPTH, JsonBodyCheck, is_json_media_type


def verdict(*pieces: bytes, max_depth: int = MAX_DEPTH) -> str:
    """``"ok"``, or the InvalidJson message, for a body fed in these pieces."""
    check = JsonBodyCheck(max_depth)
    try:
        for piece in pieces:
            check.feed(piece)
        check.close()
    except InvalidJson as error:
        return error.message
    return "ok"


def old_verdict(body: bytes) -> bool:
    """What the check before this one (json.loads on the whole body, skipped when empty) said."""
    if not body:
        return True
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Accepted, as json.loads accepted them.
VALID = [
    b"{}", b"[]", b"0", b"-0.5e+3", b'"x"', b"true", b"false", b"null",
    b' \n\t{"a": [1, {"b": null}], "c": "d"}\r\n',
    b'{"a": 1, "a": 2}',  # duplicate keys: syntax only
    b'"\\ud800"', b'"\\ud83dx"', b'"\\ud800\\ud800"',  # escaped lone high surrogates
    b'"\\ud83d\\ude00"',  # a surrogate pair
    '{"name": "Zoë", "emoji": "😀"}'.encode(),
    b"123456789012345678901234567890", b"-18446744073709551617", b"1e400", b"-1e-400", b"[1.5, -2, 3E-2]",
    b"1e999999999999999999", b"-1E-999999999999999999",
    b"0." + b"1" * 5000,
    b'"\\u0000 \\n \\" \\\\ \\/"',
    nested(MAX_DEPTH),
    b"",  # no body at all: nothing to be malformed
]

# Refused, as json.loads refused them: (body, the reason given).
INVALID = [
    (b'{"a": 1,}', "malformed"),
    (b"[1,]", "malformed"),
    (b"{'a': 1}", "malformed"),
    (b"01", "data follows the value"),
    (b"{} {}", "data follows the value"),
    (b"{}x", "data follows the value"),
    (b"[1] ,", "data follows the value"),
    (b'{"a": ', "it ends before the value is complete"),
    (b"[[[", "it ends before the value is complete"),
    (b"  \n", "it ends before the value is complete"),  # only whitespace
    (b"tru", "malformed"),
    (b"-", "malformed"),
    (b"// comment\n{}", "malformed"),
    (b'"a\x01"', "malformed"),  # a raw control character in a string
    (b'"\xff"', "not UTF-8"),
    (b'"\xc0\x80"', "not UTF-8"),  # overlong encoding
    (b"1" * 5000, "malformed"),  # past Python's int digit limit, as json.loads
    (b'{}"', "it ends before the value is complete"),  # yajl alone would take these three
    (b'1"', "it ends before the value is complete"),
    (b'{} "abc', "it ends before the value is complete"),
    (b'"abc', "it ends before the value is complete"),
    (b'[1, -' + b"1" * 4301 + b"]", "malformed"),
]

# Refused on purpose where json.loads accepted them (gateway/jsonbody.py says why).
REFUSED_NOW = [
    (b"NaN", "malformed"),
    (b"[Infinity]", "malformed"),
    (b'{"a": -Infinity}', "malformed"),
    ('{"a": 1}'.encode("utf-16"), "malformed"),
    ('{"a": 1}'.encode("utf-32"), "malformed"),
    (b"\xef\xbb\xbf{}", "malformed"),  # a UTF-8 byte-order mark
    (b'"\xed\xa0\x80"', "not UTF-8"),  # an encoded lone surrogate
    (b"1e2345678901234567890", "malformed"),  # past what a Decimal holds
    (b"[1e-2345678901234567890]", "malformed"),
    (b'"\\udc00"', "not UTF-8"),  # escaped lone low surrogates
    (b'["a\\udfffb"]', "not UTF-8"),
    (nested(MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
    (nested(900), f"nested deeper than {MAX_DEPTH} levels"),
]

# Refused now where json.loads failed with RecursionError (answered as a 500 before).
REFUSED_NOT_CRASHED = [
    (nested(100_000), f"nested deeper than {MAX_DEPTH} levels"),
    (b"[" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
    (b'{"a":' * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
]


@pytest.mark.parametrize("body", VALID)
def test_valid_bodies_pass(body: bytes) -> None:
    assert verdict(body) == "ok"


@pytest.mark.parametrize("body, reason", INVALID + REFUSED_NOW + REFUSED_NOT_CRASHED)
def test_invalid_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    assert verdict(body) == "request body is not valid JSON: " + reason


@pytest.mark.parametrize("body", VALID)
def test_what_passes_passed_before(body: bytes) -> None:
    assert old_verdict(body) is True


@pytest.mark.parametrize("body, reason", INVALID)
def test_what_is_refused_was_refused_before(body: bytes, reason: str) -> None:
    assert old_verdict(body) is False


@pytest.mark.parametrize("body, reason", REFUSED_NOW)
def test_the_deliberate_differences_passed_before(body: bytes, reason: str) -> None:
    assert old_verdict(body) is True


@pytest.mark.parametrize("body, reason", REFUSED_NOT_CRASHED)
def test_deep_nesting_crashed_the_old_decoder(body: bytes, reason: str) -> None:
    with pytest.raises(RecursionError):
        json.loads(body)


SPLIT = [
    '{"name": "Zoë 😀", "n": [1, 2.50, -0e3, 1e400], "ok": true, "no": null, "s": "\\u00e9\\""}'.encode(),
    b'[{"a": {}}, [], "x", 12345678901234567890]',
    nested(MAX_DEPTH),
    b'{"a": [1, 2,]}',
    b'{"a": NaN}',
    b'["\xe2\x82"]',  # a character cut short
    b"[1] [2]",
    nested(MAX_DEPTH + 1),
    b'["a\\\\", "b\\\\\\"c", "\\\\\\\\\\"", 12.5e-3, "x\\u0041", -7]',  # runs of escaped backslashes
    b'{"k\\"ey": "v\\\\"}',
    b'["ok", "a\x01b"]',  # a control character inside a string
    b'[1.5e+3, 2 3]',
]


@pytest.mark.parametrize("body", SPLIT)
def test_the_verdict_does_not_depend_on_where_the_body_is_split(body: bytes) -> None:
    whole = verdict(body)
    for at in range(len(body) + 1):
        assert verdict(body[:at], body[at:]) == whole, at
    assert verdict(*(body[i:i + 1] for i in range(len(body)))) == whole


class Sends:
    """Stands in for the check's parser and records what it is given."""

    def __init__(self, parser: object) -> None:
        self.parser, self.sent = parser, []  # type: ignore[var-annotated]

    def send(self, piece: bytes) -> None:
        self.sent.append(piece)
        self.parser.send(piece)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.parser.close()  # type: ignore[attr-defined]


def test_long_strings_and_numbers_reach_the_parser_whole() -> None:
    # yajl re-reads an unfinished token on every call: fed as it arrives, a long token costs quadratic time.
    body = b'{"file": "' + b"QUJD" * 65536 + b'", "n": 0.' + b"1" * 100_000 + b', "k": "\\\\\\"x"}'
    check = JsonBodyCheck()
    spy = check._parser = Sends(check._parser)  # type: ignore[assignment]
    for start in range(0, len(body), 1000):
        check.feed(body[start:start + 1000])
    check.close()
    assert b"".join(spy.sent) == body
    assert len(spy.sent) < 10  # not one per chunk: 363
    assert any(b"QUJD" * 65536 in piece for piece in spy.sent)
    assert any(b"1" * 100_000 in piece for piece in spy.sent)


def test_a_malformed_prefix_is_refused_when_fed_not_at_close() -> None:
    check = JsonBodyCheck()
    check.feed(b'{"a": [1, ')
    with pytest.raises(InvalidJson):
        check.feed(b"]")


def test_deep_nesting_is_refused_within_the_piece_that_goes_too_deep() -> None:
    check = JsonBodyCheck(max_depth=3)
    check.feed(b"[[[")
    with pytest.raises(InvalidJson, match="nested deeper than 3 levels"):
        check.feed(b"[")


def test_depth_is_followed_across_pieces_and_back_up() -> None:
    check = JsonBodyCheck(max_depth=2)
    for piece in (b"[[", b"]", b",[", b"]", b",{", b'"a":', b"1}", b"]"):
        check.feed(piece)
    check.close()


def test_a_failed_check_stays_failed() -> None:
    check = JsonBodyCheck()
    with pytest.raises(InvalidJson) as first:
        check.feed(b"}")
    with pytest.raises(InvalidJson) as again:
        check.feed(b"{}")
    with pytest.raises(InvalidJson) as closing:
        check.close()
    assert again.value is first.value and closing.value is first.value


def test_empty_pieces_are_ignored() -> None:
    assert verdict(b"", b"[", b"", b"]", b"") == "ok"
    assert verdict(b"", b"") == "ok"


def test_a_large_piece_is_parsed_in_slices() -> None:
    body = b"[" + b",".join([b"{}"] * 400_000) + b"]"  # 1.2 MiB in one piece
    assert verdict(body) == "ok"
    too_deep = body[:-1] + b"," + nested(MAX_DEPTH) + b"]"  # one level more, deep inside the piece
    assert verdict(too_deep) == f"request body is not valid JSON: nested deeper than {MAX_DEPTH} levels"


@pytest.mark.parametrize("content_type, checked", [
    ("", True),
    ("application/json", True),
    ("Application/JSON; charset=utf-8", True),
    (" application/json ;charset=utf-8", True),
    ("application/problem+json", True),
    ("application/vnd.api+json; ext=x", True),
    ("text/plain", False),
    ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=json", False),
    ("text/json", False),
    ("application/jsonl", False),
    ("application/json-patch", False),
])
def test_only_json_media_types_are_checked(content_type: str, checked: bool) -> None:
    assert is_json_media_type(content_type) is checked


def random_document(rnd: random.Random, depth: int = 0) -> Any:
    """Values whose strings are full of what the chunk cutter must get right: quotes, backslashes,
    brackets, digits, multi-byte characters."""
    alphabet = ["a", "\\", '"', "\\\\", '\\"', ",", "]", "}", "1", "é", "😀", " ", "\n", "\x01", "e", "-"]
    kind = rnd.random()
    if depth > 4 or kind < 0.3:
        if kind < 0.12:
            return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        return rnd.choice([0, -1.5e-3, 12345678901234567890, 3.25, True, False, None, rnd.random() * 1e20])
    if kind < 0.65:
        return [random_document(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return {"".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 5))): random_document(rnd, depth + 1)
            for _ in range(rnd.randint(0, 4))}


@pytest.mark.parametrize("seed", range(4))
def test_random_documents_and_their_mutations_get_the_old_verdict_in_any_pieces(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(300):
        body = json.dumps(random_document(rnd), ensure_ascii=rnd.random() < 0.3).encode()
        if rnd.random() < 0.6:  # break it, most of the time
            at, mutation = rnd.randrange(len(body) + 1), rnd.random()
            if mutation < 0.4:
                body = body[:at] + body[at + 1:]
            elif mutation < 0.8:
                body = body[:at] + bytes([rnd.choice(b'"\\,[]{}:1e. x')]) + body[at:]
            else:
                body = body[:at]
        if b"\\ud" in body.lower():
            continue  # a cut surrogate pair: the lone low surrogate difference, tabled above
        cuts = sorted(rnd.sample(range(len(body) + 1), min(len(body) + 1, rnd.randint(0, 6))))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert (verdict(*pieces) == "ok") is old_verdict(body), (body, pieces)
