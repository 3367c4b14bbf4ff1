"""Property tests: the JSON Schema (``gateway schema``) never rejects a config the loader accepts.

An editor that underlines a file ``gateway check`` calls ok would teach operators to ignore it.
Random documents and valid configs with one value swapped for a random scalar go through
both; whenever the loader builds a config, the schema must find no error in the same file.
"""

from __future__ import annotations

import jsonschema
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError
from gateway.loader import parse_config
from gateway.schema import config_schema
from tests.fuzz.test_config_fuzz import SCALAR_WORDS, documents, valid_configs
from tests.fuzz.wire import count

VALIDATOR = jsonschema.Draft202012Validator(config_schema())
ENVIRON = {"PATH": "/usr/bin"}

values = st.one_of(st.sampled_from(SCALAR_WORDS), st.integers(-5, 70000), st.floats(-1, 100, allow_nan=False),
                   st.booleans(), st.just("[GET, post]"), st.just("{}"), st.just("[]"), st.just("''"))


def agree(text: str) -> None:
    """The loader accepting ``text`` implies the schema accepting it."""
    count("schema vs loader")
    try:
        parse_config(text, environ=ENVIRON)
    except ConfigError:
        return
    count("schema vs loader, loaded")  # the cases that test something: printed at the end of the run
    errors = [f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(yaml.safe_load(text))]
    assert errors == [], text


@given(documents.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True)))
def test_a_random_document_the_loader_accepts_validates(text: str) -> None:
    agree(text)


@given(valid_configs(), st.data())
def test_a_valid_config_with_one_value_changed_validates_if_it_loads(lines: list[str], data: st.DataObject) -> None:
    valued = [i for i, line in enumerate(lines) if ": " in line]
    i = data.draw(st.sampled_from(valued))
    key = lines[i].split(": ")[0]
    value = data.draw(values)
    lines = [*lines[:i], f"{key}: {yaml.safe_dump(value).splitlines()[0] if not isinstance(value, str) else value}",
             *lines[i + 1:]]
    agree("\n".join(lines) + "\n")
