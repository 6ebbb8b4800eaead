"""With a model file of OpenAI-wire deployments only, serving never imports LiteLLM.

A fresh interpreter loads `function_app` the way the worker does (azure-functions-runtime, in
process: tests/integration/inprocess_worker.py) and serves chat (JSON and SSE), legacy completions
and embeddings through the local host's HTTP proxy, against the emulators and the fake provider
over real sockets; then it reports whether `litellm` is in `sys.modules`. A model file with one
LiteLLM deployment is the control: there it must be imported (in the background).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.stack import DEV_MASTER_KEY, ROOT

PROBE = r"""
import asyncio, json, sys, time
from pathlib import Path

import httpx

from tests.integration.inprocess_worker import InProcessWorker
from tools.funchost.http import HttpProxy, build_routes

async def main():
    worker = InProcessWorker(Path.cwd())
    await worker.start()
    app = HttpProxy(build_routes(worker.functions, ""), worker, None)
    headers = {"Authorization": "Bearer " + sys.argv[1]}
    statuses = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cirrus") as client:
        chat = {"model": "wire-chat", "messages": [{"role": "user", "content": "hi"}]}
        async def post(path, body):
            return await client.post(path, json=body, headers=headers)

        statuses["chat"] = (await post("/v1/chat/completions", chat)).status_code
        stream = await post("/v1/chat/completions", {**chat, "stream": True})
        statuses["stream"] = stream.status_code if stream.text.rstrip().endswith("[DONE]") else -1
        text = {"model": "wire-chat", "prompt": "Say hi", "max_tokens": 3}
        statuses["completions"] = (await post("/v1/completions", text)).status_code
        embed = {"model": "wire-embed", "input": ["a", "b"]}
        statuses["embeddings"] = (await post("/v1/embeddings", embed)).status_code
        deadline = time.monotonic() + 30  # a LiteLLM deployment imports it in the background
        waiting = "--wait-for-litellm" in sys.argv
        while waiting and "litellm" not in sys.modules and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    print(json.dumps({"statuses": statuses, "litellm": "litellm" in sys.modules}))

asyncio.run(main())
"""


def model_file(tmp_path: Path, provider: str, *, with_litellm: bool) -> Path:
    lines = [
        "model_list:",
        "  - model_name: wire-chat",
        f"    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{provider}/v1', api_key: fake}}",
        "  - model_name: wire-embed",
        "    litellm_params:",
        f"      {{model: openai/text-embedding-3-small, api_base: '{provider}/v1', api_key: fake}}",
    ]
    if with_litellm:
        lines += [
            "  - model_name: through-litellm",
            f"    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{provider}/v1', api_key: fake}}",
            "    model_info: {adapter: litellm}",
        ]
    path = tmp_path / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("with_litellm", [False, True], ids=["openai-wire-only", "with-a-litellm-deployment"])
def test_serving_openai_wire_models_never_imports_litellm(
    emulators, fake_provider_url, tmp_path, with_litellm
):
    env = {
        **emulators.env(),
        "PATH": "/usr/bin:/bin",
        "CIRRUS_ENV": "local",
        "CIRRUS_MODEL_CONFIG": str(model_file(tmp_path, fake_provider_url, with_litellm=with_litellm)),
        "CIRRUS_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-c", PROBE, DEV_MASTER_KEY, *(["--wait-for-litellm"] if with_litellm else [])]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["statuses"] == {"chat": 200, "stream": 200, "completions": 200, "embeddings": 200}
    assert report["litellm"] is with_litellm
