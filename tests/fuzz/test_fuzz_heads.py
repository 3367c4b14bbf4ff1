"""Property tests: raw request heads against a running gateway in front of a recording upstream.

Every case keeps :meth:`~tests.fuzz.wire.Bench.check`'s properties (an answer,
never a 500, gateway errors as SPEC §4 JSON, the upstream never sees what the
gateway refused, no underscore spoofing upstream, no ERROR log, the gateway
still serves). A well-formed head that breaks one of SPEC §4's framing and
hostile-input rules must moreover be a 400 ``bad_request``; an unauthenticated
head for the host-bound auth route must never be relayed.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.heads import (
    SECURE_HOSTS,
    Head,
    chunked,
    header_values,
    heads,
    must_not_relay,
    must_refuse,
    paths,
    queries,
    well_formed,
)
from tests.fuzz.wire import Answer, Bench


def run_case(bench: Bench, head: Head) -> Answer:
    request_id = bench.new_id()
    rule = must_refuse(head) if well_formed(head) else None
    guarded = must_not_relay(head)

    def expect(answer: Answer) -> None:
        if rule is not None:
            assert answer.status == 400 and answer.header("X-Upstream") is None, \
                f"{rule}: must be 400 bad_request, got {answer.status}: {answer.raw[:200]!r}"
            if head.method != "HEAD":
                assert json.loads(answer.body)["error"] == "bad_request", answer.body
        if guarded is not None:
            assert answer.header("X-Upstream") is None, f"{guarded} was relayed: {answer.raw[:200]!r}"

    return bench.check(head.wire(request_id), request_id, head.method, expect)


@given(heads())
def test_any_request_head(bench: Bench, head: Head) -> None:
    run_case(bench, head)


@given(heads(method=st.sampled_from(("GET", "POST", "PUT", "DELETE")),
             target=st.sampled_from(("/", "/a/b?x=1", "/json", "/limited/k", "/secure/x")),
             hosts=st.sampled_from((["gw"], [SECURE_HOSTS[0]])), headers=st.just([])))
def test_framing(bench: Bench, head: Head) -> None:
    run_case(bench, head)


@given(heads(method=st.sampled_from(("GET", "POST", "HEAD", "OPTIONS", "get")),
             target=st.one_of(st.builds(str.__add__, paths, queries),
                              st.builds(str.__add__, st.sampled_from(("/secure", "/secure/", "/secure/x")), queries)),
             hosts=st.one_of(st.lists(st.sampled_from(SECURE_HOSTS), min_size=1, max_size=2),
                             st.sampled_from(([], ["gw"], ["[::1]:80"], ["api.example.com.evil"]))),
             headers=st.just([])))
def test_host_and_path_tricks(bench: Bench, head: Head) -> None:
    run_case(bench, head)


SPOOF_NAMES = ("X_User_Id", "X_User_Scopes", "X_Forwarded_For", "X_Forwarded_Host", "X_Forwarded_Proto",
               "X_Forwarded_Prefix", "X_Request_Id", "x_request_id", "Trace_Parent", "X-User_Id", "X_Forwarded-For",
               "X-Api-Key", "X-Api-Key", "Authorization", "Authorization", "x-api-key")


@given(heads(method=st.sampled_from(("GET", "POST")),
             target=st.sampled_from(("/", "/limited", "/limited/x", "/secure", "/json")),
             hosts=st.sampled_from((["gw"], [SECURE_HOSTS[0]])),
             headers=st.lists(st.tuples(st.sampled_from(SPOOF_NAMES), header_values), max_size=5).filter(
                 lambda headers: sum(len(v) for _, v in headers) < 200_000)))
def test_header_spoofing(bench: Bench, head: Head) -> None:
    run_case(bench, head)


def nested(depth: int, kind: str) -> bytes:
    opening, closing = {"list": ("[", "]"), "dict": ('{"a":', "}"), "mixed": ('[{"a":', "}]")}[kind]
    return (opening * depth + "1" + closing * depth).encode()


json_bodies = st.one_of(
    st.builds(nested, st.integers(1, 12000), st.sampled_from(("list", "dict", "mixed"))),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from((b"", b"{", b"[1,", b"NaN", b"\xff\xfe", b'"\\ud800"', b"1" * 5000, b"[" * 70000)),
)


@given(json_bodies, st.sampled_from(("application/json", "application/problem+json", "text/plain", "")),
       st.sampled_from(("cl", "chunked")), st.sampled_from(("POST", "PUT", "PATCH")))
def test_json_bodies(bench: Bench, body: bytes, content_type: str, framing: str, method: str) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    if framing == "cl":
        head = Head(method=method, target="/json", headers=headers, framing=[("Content-Length", str(len(body)))],
                    body=body)
    else:
        head = Head(method=method, target="/json", headers=headers, framing=[("Transfer-Encoding", "chunked")],
                    body=chunked(body, 3))
    answer = run_case(bench, head)
    if len(body) > 65536:
        # Over the route's body limit: 413, unless the JSON check refused a prefix first (a streamed
        # check answers as soon as the bad bytes arrive, before the limit is reached).
        refused_early = answer.status == 400 and json.loads(answer.body)["error"] == "invalid_json"
        assert answer.status == 413 or refused_early, answer.raw[:200]
