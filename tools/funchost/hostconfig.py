"""host.json and local.settings.json, parsed and validated the way the Functions host reads them."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("funchost")


class HostConfigError(ValueError):
    """host.json, local.settings.json or a trigger's settings are invalid: the host does not start."""


# .NET TimeSpan in the forms host.json uses: [d.]hh:mm[:ss[.fffffff]].
_TIMESPAN = re.compile(
    r"(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2})(?:\.(?P<f>\d{1,7}))?)?"
)


def parse_timespan(value: object, setting: str) -> float:
    """Seconds in a TimeSpan string such as "00:00:02", "00:00:00.200" or "1.02:00:00"."""
    match = _TIMESPAN.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise HostConfigError(f"{setting}: {value!r} is not a TimeSpan like 'hh:mm:ss[.fff]' or 'd.hh:mm:ss'")
    hours, minutes, seconds = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise HostConfigError(f"{setting}: {value!r} is out of range (hh < 24, mm and ss < 60)")
    fraction = float("0." + match["f"]) if match["f"] else 0.0
    return int(match["d"] or 0) * 86400 + hours * 3600 + minutes * 60 + seconds + fraction


@dataclass(frozen=True)
class QueueOptions:
    """`extensions.queues`, with the Functions defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    """The host.json settings this host honours."""

    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    function_timeout: float | None = None  # seconds; None = unbounded (the local default)
    # extensions.http.customHeaders: added to every HTTP response that lacks them (pipeline.py).
    custom_headers: tuple[tuple[str, str], ...] = ()


def _get(section: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Case-insensitive lookup: .NET configuration keys are case-insensitive."""
    for name, value in section.items():
        if name.lower() == key.lower():
            return value
    return default


def _section(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _get(parent, key, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HostConfigError(f"{where}{key}: expected an object, got {value!r}")
    return value


# App settings `AzureFunctionsJobHost__a__b=v` override host.json's a.b, as in Azure (`__` separates levels).
HOST_OVERRIDE_PREFIX = "AzureFunctionsJobHost__"
# Settings that parse_host_config reads as integers: an override's string value becomes an int for them.
_INT_SETTINGS = frozenset(
    (
        "extensions.queues.batchsize",
        "extensions.queues.newbatchthreshold",
        "extensions.queues.maxdequeuecount",
    )
)
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


@dataclass(frozen=True)
class HostOverride:
    """One `AzureFunctionsJobHost__...` app setting: where it points in host.json and its value."""

    name: str  # the app setting, e.g. AzureFunctionsJobHost__extensions__queues__maxDequeueCount
    path: tuple[str, ...]  # ("extensions", "queues", "maxDequeueCount")
    value: Any  # the string, or an int for the integer settings

    @property
    def setting(self) -> str:
        return ".".join(self.path)


def host_overrides(environ: Mapping[str, str]) -> list[HostOverride]:
    """The `AzureFunctionsJobHost__<path>` app settings (prefix and path case-insensitive), shortest first."""
    prefix = HOST_OVERRIDE_PREFIX.lower()
    overrides: dict[str, HostOverride] = {}
    for name in sorted(environ):
        if not name.lower().startswith(prefix):
            continue
        path = tuple(name[len(prefix) :].split("__"))
        if not all(path):
            raise HostConfigError(
                f"app setting {name}: empty level in the host.json path ('__' separates levels)"
            )
        value: Any = environ[name]
        key = ".".join(path).lower()
        if key in _INT_SETTINGS and _INTEGER.fullmatch(value):
            value = int(value)  # otherwise parse_host_config rejects it, naming the setting
        other = overrides.setdefault(key, HostOverride(name, path, value))
        if other.value != value:  # names differing only in case: which one wins would be arbitrary
            raise HostConfigError(f"app settings {other.name} and {name} set {other.setting} differently")
    return sorted(overrides.values(), key=lambda o: len(o.path))


def apply_host_overrides(data: Mapping[str, Any], overrides: list[HostOverride]) -> dict[str, Any]:
    """A copy of the parsed host.json with each override set at its path (keys matched case-insensitively).

    Levels missing from host.json are created, so an unknown path is applied and then ignored like any
    unknown host.json key; a level that holds a value rather than an object cannot take a sub-setting.
    """
    result = copy.deepcopy(dict(data))
    for override in overrides:
        section = result
        for depth, segment in enumerate(override.path):
            key = next((k for k in section if k.lower() == segment.lower()), segment)
            if depth == len(override.path) - 1:
                section[key] = override.value
                break
            child = section.get(key)
            if child is None:
                child = section[key] = {}
            if not isinstance(child, dict):
                where = ".".join(override.path[: depth + 1])
                raise HostConfigError(f"app setting {override.name}: {where} holds a value, not an object")
            section = child
    return result


def _int(section: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = _get(section, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        expected = f"an integer in [{low}, {high}]"
        raise HostConfigError(f"extensions.queues.{key}: expected {expected}, got {value!r}")
    return value


def parse_host_config(data: Mapping[str, Any]) -> HostConfig:
    """Validate the parsed host.json; raise HostConfigError with the offending setting."""
    if not isinstance(data, Mapping):
        raise HostConfigError("host.json: expected a JSON object")
    version = _get(data, "version")
    if version is not None and version != "2.0":
        raise HostConfigError(f"version: only '2.0' is supported, got {version!r}")
    extensions = _section(data, "extensions", "")

    http = _section(extensions, "http", "extensions.")
    prefix = _get(http, "routePrefix", "api")
    if not isinstance(prefix, str):
        raise HostConfigError(f"extensions.http.routePrefix: expected a string, got {prefix!r}")
    custom = _section(http, "customHeaders", "extensions.http.")
    for name, value in custom.items():
        token = re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name)
        if not token or not isinstance(value, str) or "\r" in value or "\n" in value:
            raise HostConfigError(
                f"extensions.http.customHeaders.{name}: expected a header name and a string, got {value!r}"
            )

    q = _section(extensions, "queues", "extensions.")
    batch_size = _int(q, "batchSize", 16, 1, 32)  # 32 is the Queue service's maximum per receive
    encoding = _get(q, "messageEncoding", "base64")
    if not isinstance(encoding, str) or encoding.lower() not in ("base64", "none"):
        raise HostConfigError(f"extensions.queues.messageEncoding: 'base64' or 'none', not {encoding!r}")
    max_polling = parse_timespan(
        _get(q, "maxPollingInterval", "00:01:00"), "extensions.queues.maxPollingInterval"
    )
    if max_polling < 0.1:
        raise HostConfigError("extensions.queues.maxPollingInterval: must be at least 00:00:00.100")
    queues = QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=_int(q, "newBatchThreshold", batch_size // 2, 0, 1000),
        max_polling_interval=max_polling,
        visibility_timeout=parse_timespan(
            _get(q, "visibilityTimeout", "00:00:00"), "extensions.queues.visibilityTimeout"
        ),
        max_dequeue_count=_int(q, "maxDequeueCount", 5, 1, 1000),
        message_encoding=encoding.lower(),
    )

    timeout_value = _get(data, "functionTimeout")
    timeout = None
    if timeout_value is not None and timeout_value != "-1":  # "-1" is the documented "unbounded"
        timeout = parse_timespan(timeout_value, "functionTimeout")
        if timeout <= 0:
            raise HostConfigError("functionTimeout: must be positive (or '-1' for unbounded)")
    return HostConfig(
        route_prefix=prefix.strip("/"),
        queues=queues,
        function_timeout=timeout,
        custom_headers=tuple(custom.items()),
    )


def load_host_config(script_root: Path, environ: Mapping[str, str] = os.environ) -> HostConfig:
    """Read `<script_root>/host.json` (required, as with Core Tools) with its app-setting overrides."""
    path = script_root / "host.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise HostConfigError(f"{path} not found: the script root must contain host.json") from None
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path}: invalid JSON ({exc})") from None
    overrides = host_overrides(environ)
    if overrides and isinstance(data, Mapping):  # otherwise parse_host_config says what is wrong
        data = apply_host_overrides(data, overrides)
        for override in overrides:
            log.info("host.json: %s overridden by app setting %s", override.setting, override.name)
    try:
        return parse_host_config(data)
    except HostConfigError as exc:
        # Errors start with the setting's path: name the app setting when the value came from one.
        setting = str(exc).split(":", 1)[0].lower()
        for override in overrides:
            if setting == override.setting.lower() or setting.startswith(override.setting.lower() + "."):
                raise HostConfigError(f"{exc} (from app setting {override.name})") from None
        raise


def load_local_settings(script_root: Path, environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Copy `Values` of local.settings.json into `environ` where unset (environment wins); return keys set."""
    path = script_root / "local.settings.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, Mapping) or data.get("IsEncrypted"):
        raise HostConfigError(f"{path}: expected an unencrypted object with 'Values'")
    values = data.get("Values") or {}
    if not isinstance(values, Mapping):
        raise HostConfigError(f"{path}: 'Values' must be an object")
    applied = []
    for key, value in values.items():
        if isinstance(value, (dict, list)) or value is None:
            raise HostConfigError(f"{path}: Values.{key} must be a string")
        if key not in environ:
            environ[key] = value if isinstance(value, str) else json.dumps(value)  # true -> "true"
            applied.append(key)
    return applied


def resolve_setting_refs(text: str, environ: Mapping[str, str], where: str) -> str:
    """Replace `%NAME%` with the app setting NAME, as binding expressions do; unset is an error."""

    def setting(match: re.Match[str]) -> str:
        name = match[1]
        if name not in environ:
            raise HostConfigError(f"{where}: app setting '{name}' (from {text!r}) is not set")
        return environ[name]

    return re.sub(r"%([^%]+)%", setting, text)
