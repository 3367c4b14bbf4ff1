"""gateway.admin.check_bearer: exactly one ``Authorization: Bearer <admin.token>``, else the refusal."""

from __future__ import annotations

import pytest

from gateway.admin import check_bearer
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
