"""Vendor the parts of OpenAI's OpenAPI spec that Cirrus's responses must match.

    python -m tools.extract_openai_schemas ../shared/specs/openai-openapi.yaml

writes tests/specs/openai-schemas.json: the named component schemas and everything they
reference, with OpenAPI 3.0's `nullable: true` rewritten as JSON Schema (`anyOf` with null), so
tests validate with a plain JSON Schema validator. The spec is MIT-licensed by OpenAI
(tests/specs/LICENSE).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "OpenAIFile",
    "ListFilesResponse",
    "Batch",
    "ListBatchesResponse",
    "CreateModerationResponse",
    "ImagesResponse",
    "CreateTranscriptionResponseJson",
    "CreateTranscriptionResponseVerboseJson",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
)
OUT = Path(__file__).resolve().parent.parent / "tests" / "specs" / "openai-schemas.json"


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` → `anyOf: [schema, {type: null}]`, recursively."""
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def extract(spec_path: Path) -> dict[str, Any]:
    schemas = yaml.load(spec_path.read_text(), Loader=yaml.CSafeLoader)["components"]["schemas"]
    wanted: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(_refs(schemas[name]) - wanted)
    return {"components": {"schemas": {n: _json_schema(schemas[n]) for n in sorted(wanted)}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    args = parser.parse_args()
    OUT.write_text(json.dumps(extract(args.spec), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
