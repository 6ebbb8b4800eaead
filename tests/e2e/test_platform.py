"""End to end: models, health and unknown routes on the local host."""

import time

import httpx
import pytest

from tests.e2e.helpers import model_names
from tests.openapi import assert_matches


def test_models_list(stack):
    models = stack.client().models.list()
    assert [m.id for m in models.data] == [
        "cirrus-local",
        "cirrus-embed",
        "cirrus-no-tools",
        "cirrus-cached",
        "cirrus-priced",
        "cirrus-slow",
        "cirrus-broken",
        "cirrus-claude",
        "cirrus-responses",
        "cirrus-moderation",
        "cirrus-image",
        "cirrus-transcribe",
        "cirrus-speech",
        "cirrus-rerank",
        "cirrus-rerank-priced",
    ]
    raw = httpx.get(
        f"{stack.base_url}/v1/models", headers={"Authorization": f"Bearer {stack.master_key}"}
    ).json()
    assert_matches("ListModelsResponse", raw)


def test_one_model(stack):
    model = stack.client().models.retrieve("cirrus-embed")
    assert (model.id, model.object) == ("cirrus-embed", "model")
    response = httpx.get(
        f"{stack.base_url}/v1/models/gpt-9", headers={"Authorization": f"Bearer {stack.master_key}"}
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "code"), [("/v1/models/a%0Ab", "model_not_found"), ("/v1/no%0Ape", "unknown_url")]
)
def test_a_newline_in_the_path_reaches_cirrus_not_the_workers_own_404(stack, path, code):
    # The worker's FastAPI catch-all stopped at a newline: FastAPI answered {"detail": "Not Found"}
    # itself and the invocation waited for its request until the function timeout
    # (shared/worker_http.py).
    response = httpx.get(stack.base_url + path, headers={"Authorization": f"Bearer {stack.master_key}"})
    assert response.status_code == 404 and response.json()["error"]["code"] == code


def test_models_need_a_key(stack):
    assert httpx.get(f"{stack.base_url}/v1/models").status_code == 401


def test_liveness(stack):
    response = httpx.get(f"{stack.base_url}/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readiness_checks_every_dependency(stack):
    response = httpx.get(f"{stack.base_url}/health/ready", timeout=30)
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"cosmos", "blob", "queue", "models"}
    for check in body["checks"].values():
        assert check["status"] == "ok" and check["latency_ms"] >= 0
    assert body["checks"]["models"]["detail"] == {"models": len(model_names())}


def test_unknown_v1_route_is_an_openai_404(stack):
    response = httpx.post(
        f"{stack.base_url}/v1/nope", headers={"Authorization": f"Bearer {stack.master_key}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_the_sweeper_runs_on_its_timer(stack):
    """The host fires the sweep function on CIRRUS_SWEEP_SCHEDULE (every 2 s here), and it sweeps
    batches and jobs: its log line says what each re-drove."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = stack.log.read_text(errors="replace")
        if "Executed 'Functions.sweep' (Succeeded" in text and '"message": "sweep: {' in text:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the sweep timer never ran (see the host log)")
    assert "'batches':" in text and "'jobs':" in text
