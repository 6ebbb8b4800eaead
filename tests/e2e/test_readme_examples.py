"""End to end: every curl, JSON and Python example in the README runs against the local stack.

The examples are read from README.md's fenced blocks each time, so the test follows them when
they change. Shell blocks run in bash with `curl` made to fail on an HTTP error; Python blocks run
in a fresh interpreter; JSON blocks are request bodies, sent to the route their section names
(`JSON_ROUTES`). The README's base URL (`make dev`'s) is rewritten to the test stack's. A block
that cannot run here is in `SKIPS` with the reason; a new block that is neither run nor skipped
fails the test, and so does a skip that no longer matches a block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
README_BASE = "http://127.0.0.1:7071"
README_ISSUER_STATE = ".cirrus/oidc-issuer"  # `make dev`'s local Entra ID issuer
KINDS = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python", "json": "json"}

# A text only that block holds → why it does not run here.
SKIPS = {
    "make test   #": "the two commands themselves: `make test` runs this test, and the test runs "
    "against the stack `make dev` would start",
    "from agents import": "needs `openai-agents`, a client's package that Cirrus does not depend on",
    "claude -p": "needs Claude Code (npm `@anthropic-ai/claude-code`), a client not installed here",
    "func start": "needs Azure Functions Core Tools, which cannot be installed here (DESIGN.md); the "
    "local host stands in for it in every other example",
    "client.batches.create(": "a fragment (`client` and requests.jsonl are the reader's; "
    "output_file_id exists once the batch completes); tests/e2e/test_batches.py runs this flow",
    "tools.batch_cli status": "a synopsis (`status batch_… | wait batch_… | …`), not a command; "
    "tests/unit/test_batch_cli.py covers the CLI",
    "QueueClient.from_connection_string": "needs the reader's storage connection string and key id; "
    "tests/e2e/test_job_workers.py submits jobs on the queue",
    "azd auth login": "deploys to Azure (`azd up`): needs a subscription",
    "az keyvault secret set": "writes to Azure Key Vault: needs a subscription",
    "az ad app create": "registers an application in an Entra ID tenant: needs Azure",
    "get_bearer_token_provider(DefaultAzureCredential()": "needs an Entra ID tenant and a deployed Cirrus; "
    "tests/e2e/test_identity.py runs the same client against the local issuer",
}
# README section → the route its JSON examples are bodies for.
JSON_ROUTES = {"Jobs: agent runs and analysis": "/v1/jobs"}
SHELL_PRELUDE = """set -euo pipefail
curl() { command curl --silent --show-error --fail-with-body --max-time 60 "$@"; }
"""


@dataclass(frozen=True)
class Example:
    line: int
    kind: str  # shell, python or json
    section: str
    text: str

    @property
    def skip(self) -> str | None:
        return next((why for marker, why in SKIPS.items() if marker in self.text), None)


def examples() -> list[Example]:
    found, section = [], ""
    lines = README.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if heading := re.match(r"^#{1,6} (.+)$", line):
            section = heading.group(1).strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            if fence.group(1) in KINDS:
                text = "\n".join(lines[index + 1 : end]) + "\n"
                found.append(Example(index + 1, KINDS[fence.group(1)], section, text))
            index = end
        index += 1
    return found


EXAMPLES = examples()


def test_every_skip_matches_one_example():
    for marker in SKIPS:
        matches = [e.line for e in EXAMPLES if marker in e.text]
        assert len(matches) == 1, f"skip {marker!r} matches README blocks at lines {matches}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"line{e.line}-{e.kind}")
def test_readme_example_runs(stack, example: Example, tmp_path):
    if example.skip:
        pytest.skip(example.skip)
    if example.kind == "json":
        route = JSON_ROUTES.get(example.section)
        assert route, (
            f"README line {example.line}: JSON in section {example.section!r}, which JSON_ROUTES lacks"
        )
        response = httpx.post(
            stack.base_url + route,
            json=json.loads(example.text),
            headers={"Authorization": f"Bearer {stack.master_key}"},
            timeout=60,
        )
        assert response.is_success, response.text
        return
    assert README_BASE in example.text, f"README line {example.line}: no {README_BASE} to point at the stack"
    code = example.text.replace(README_BASE, stack.base_url).replace(
        README_ISSUER_STATE, str(stack.issuer_state)
    )
    command = (
        ["bash", "-c", SHELL_PRELUDE + code] if example.kind == "shell" else [sys.executable, "-c", code]
    )
    # As in a checkout with its venv active: `python` is the venv's, `python -m tools...` finds the repo.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(README.parent),
    }
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"README line {example.line}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    if example.kind == "python":
        assert result.stdout.strip(), f"README line {example.line} printed nothing"
