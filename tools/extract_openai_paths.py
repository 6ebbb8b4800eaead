"""Vendor the operations of OpenAI's OpenAPI spec that Cirrus also serves, for fuzzing.

    python -m tools.extract_openai_paths ../shared/specs/openai-openapi.yaml

writes tests/specs/openai-paths.json: an OpenAPI document with only those operations (`OPERATIONS`)
and every component they reference, `nullable: true` rewritten as JSON Schema (the spec says 3.1
but marks nullable fields the 3.0 way, which a 3.1 validator ignores), and OpenAI's doc-only
`x-oaiMeta` dropped, and the corrections in `correct()` applied where the spec contradicts
itself or OpenAI's API. tests/e2e/test_openapi_fuzz.py runs schemathesis from it against the
local stack. The spec is MIT-licensed by OpenAI (tests/specs/LICENSE).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from tools.extract_openai_schemas import _json_schema

# (method, path under /v1): what Cirrus serves with OpenAI's contract.
OPERATIONS = (
    ("post", "/chat/completions"),
    ("post", "/completions"),
    ("post", "/embeddings"),
    ("get", "/models"),
    ("get", "/models/{model}"),
    ("post", "/moderations"),
    ("post", "/images/generations"),
    ("post", "/audio/transcriptions"),
    ("post", "/audio/speech"),
    ("post", "/responses"),
    ("get", "/responses/{response_id}"),
    ("delete", "/responses/{response_id}"),
    ("post", "/responses/{response_id}/cancel"),
    ("get", "/responses/{response_id}/input_items"),
    ("post", "/files"),
    ("get", "/files"),
    ("get", "/files/{file_id}"),
    ("delete", "/files/{file_id}"),
    ("get", "/files/{file_id}/content"),
    ("post", "/batches"),
    ("get", "/batches"),
    ("get", "/batches/{batch_id}"),
    ("post", "/batches/{batch_id}/cancel"),
)
OUT = Path(__file__).resolve().parent.parent / "tests" / "specs" / "openai-paths.json"


def _refs(node: Any) -> set[tuple[str, str]]:
    """(section, name) of every `#/components/<section>/<name>` under `node`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        found = (
            {tuple(ref.split("/")[2:4])}
            if isinstance(ref, str) and ref.startswith("#/components/")
            else set()
        )
        for value in node.values():
            found |= _refs(value)
        return found  # type: ignore[return-value]
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _without_meta(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_meta(v) for k, v in node.items() if k != "x-oaiMeta"}
    if isinstance(node, list):
        return [_without_meta(v) for v in node]
    return node


def extract(spec_path: Path) -> dict[str, Any]:
    spec = yaml.load(spec_path.read_text(), Loader=yaml.CSafeLoader)
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        item = spec["paths"][path]
        paths.setdefault(path, {k: v for k, v in item.items() if k == "parameters"})[method] = item[method]
    paths = _without_meta(paths)
    components = spec["components"]
    wanted: set[tuple[str, str]] = set()
    todo = list(_refs(paths))
    while todo:
        ref = todo.pop()
        if ref not in wanted:
            wanted.add(ref)
            todo.extend(_refs(components[ref[0]][ref[1]]) - wanted)
    picked: dict[str, dict[str, Any]] = {"securitySchemes": components["securitySchemes"]}
    for section, name in sorted(wanted):
        picked.setdefault(section, {})[name] = _json_schema(_without_meta(components[section][name]))
    info = {**spec["info"], "description": "The operations Cirrus shares, from " + spec["info"]["title"]}
    doc = {
        "openapi": spec["openapi"],
        "info": info,
        "servers": spec["servers"],
        "security": spec["security"],
        "paths": _json_schema(paths),
        "components": picked,
    }
    return correct(doc)


def correct(doc: dict[str, Any]) -> dict[str, Any]:
    """Where the spec contradicts its own request schemas or what OpenAI's API sends (and its SDKs
    read), the API wins. Each correction says why."""
    schemas = doc["components"]["schemas"]
    # 1. Error responses documented as a bare `Error` are sent as `{"error": Error}` (ErrorResponse).
    bare, wrapped = {"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/ErrorResponse"}
    for item in doc["paths"].values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                for media in response.get("content", {}).values():
                    if not status.startswith("2") and media.get("schema") == bare:
                        media["schema"] = wrapped
    if "ErrorResponse" not in schemas:
        raise SystemExit("the spec has no ErrorResponse schema any more: review correct()")
    # 2. An empty page has no first or last id: list responses send null for them.
    for name, schema in schemas.items():
        if name.startswith("List") and name.endswith("Response"):
            for field in ("first_id", "last_id"):
                if field in schema.get("properties", {}):
                    schema["properties"][field] = {"anyOf": [schema["properties"][field], {"type": "null"}]}
    # 3. A file keeps the purpose it was uploaded with, and CreateFileRequest accepts more purposes
    #    (`evals`) than OpenAIFile lists.
    purpose = schemas["OpenAIFile"]["properties"]["purpose"]
    uploads = schemas["CreateFileRequest"]["properties"]["purpose"]["enum"]
    purpose["enum"] += [p for p in uploads if p not in purpose["enum"]]
    # 4. A file's content is its bytes, not JSON.
    content = doc["paths"]["/files/{file_id}/content"]["get"]["responses"]["200"]["content"]
    content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    del content["application/json"]
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    args = parser.parse_args()
    OUT.write_text(json.dumps(extract(args.spec), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
