"""gateway.admin.check_bearer: exactly one ``Authorization: Bearer <admin.token>``, else the refusal."""

from __future__ import annotations

import pytest

from gateway.admin import check_bearer, exposed_without_token
from gateway.errors import InvalidToken, MissingToken

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("values, expected", [
    ([f"Bearer {TOKEN}"], None),
    ([f"bearer {TOKEN}"], None),
    ([f"  Bearer   {TOKEN}  "], None),
    ([], MissingToken),
    ([""], MissingToken),
    ([TOKEN], MissingToken),
    ([f"Basic {TOKEN}"], MissingToken),
    ([f"Bearer{TOKEN}"], MissingToken),
    (["Bearer"], InvalidToken),
    (["Bearer "], InvalidToken),
    ([f"Bearer {TOKEN[:-1]}"], InvalidToken),
    ([f"Bearer {TOKEN}0"], InvalidToken),
    ([f"Bearer {TOKEN.upper()}"], InvalidToken),
    ([f"Bearer {TOKEN} {TOKEN}"], InvalidToken),
    ([f"Bearer {TOKEN[:-1]}\u00e9"], InvalidToken),
    ([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], InvalidToken),
    ([f"Bearer {TOKEN}", "Bearer other"], InvalidToken),
])
def test_check_bearer(values: list[str], expected: type | None) -> None:
    refusal = check_bearer(values, TOKEN.encode())
    if expected is None:
        assert refusal is None
    else:
        assert type(refusal) is expected and refusal.status == 401
        assert TOKEN not in refusal.message and TOKEN not in str(refusal.headers)


@pytest.mark.parametrize("host, token, exposed", [
    ("127.0.0.1", None, False),
    ("127.0.0.2", None, False),
    ("::1", None, False),
    ("localhost", None, False),
    ("LOCALHOST", None, False),
    ("0.0.0.0", None, True),
    ("::", None, True),
    ("10.0.0.5", None, True),
    ("gateway.internal", None, True),
    ("0.0.0.0", "x" * 32, False),
    ("0.0.0.0", "", True),
])
def test_an_admin_listener_reachable_from_elsewhere_without_a_token_is_warned_about(
        host: str, token: str | None, exposed: bool) -> None:
    assert exposed_without_token(host, token) is exposed
