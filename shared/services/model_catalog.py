"""The public model names Cirrus serves, from the model file, in OpenAI's model-list shape."""

from __future__ import annotations

from typing import Any

from shared.config import ModelConfig
from shared.errors import ModelNotFoundError


class ModelCatalog:
    def __init__(self, config: ModelConfig, created: int) -> None:
        self._config = config
        self._models = {name: self._model(name, created) for name in config.model_names()}

    def require(self, name: str) -> None:
        """Raise 404 `model_not_found` unless `name` is served."""
        if name not in self._models:
            raise ModelNotFoundError(name)

    def get(self, name: str) -> dict[str, Any]:
        self.require(name)
        return self._models[name]

    def list_models(self) -> list[dict[str, Any]]:
        return list(self._models.values())

    def cache_ttl(self, name: str) -> int:
        """Seconds to cache exact-match answers for `name` (`model_info.cache_ttl_seconds`); 0 = off."""
        ttls = [int(d.model_info.get("cache_ttl_seconds") or 0) for d in self._config.deployments(name)]
        return min(ttls, default=0)

    def rate_limits(self, name: str) -> tuple[int | None, int | None]:
        """Requests and tokens per minute `name` can take: the sum of its deployments' `rpm`/`tpm`
        (LiteLLM's fields, in `litellm_params` or `model_info`); None where any deployment has none."""
        totals: list[int | None] = []
        for field_name in ("rpm", "tpm"):
            values = [
                d.litellm_params.model_dump().get(field_name) or d.model_info.get(field_name)
                for d in self._config.deployments(name)
            ]
            known = [int(v) for v in values if v]
            totals.append(sum(known) if values and len(known) == len(values) else None)
        return totals[0], totals[1]

    def _model(self, name: str, created: int) -> dict[str, Any]:
        """OpenAI's `Model` object."""
        info = self._config.deployments(name)[0].model_info
        return {
            "id": name,
            "object": "model",
            "created": int(info.get("created", created)),
            "owned_by": str(info.get("owned_by", "cirrus")),
        }
