"""Validate response bodies and stream chunks against OpenAI's published component schemas."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS = Path(__file__).parent / "specs" / "openai-schemas.json"
_URI = "urn:openai-schemas"


@functools.cache
def _registry() -> Registry:
    document = json.loads(SCHEMAS.read_text())
    return Registry().with_resource(_URI, Resource.from_contents(document, default_specification=DRAFT202012))


@functools.cache
def validator(component: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{component}"}, registry=_registry())


def assert_matches(component: str, instance: Any) -> None:
    """Fail with every schema violation listed, not just the first."""
    errors = sorted(validator(component).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{component} violations:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )
