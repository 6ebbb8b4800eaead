"""The Functions language worker protocol, compiled from `protos/` with grpcio-tools on first use.

`protos/` holds unmodified copies of Azure/azure-functions-language-worker-protobuf's `src/proto`.
protoc would generate top-level packages `shared` and `identity` from their folders, and a
top-level `shared` shadows Cirrus's own. So the modules are generated into this package's
`_generated/` (git-ignored) and their imports rewritten to relative ones. A stamp of the protos'
hash and the grpcio-tools version decides when to regenerate; the new package is built beside the
old one and swapped in with one rename, so a host and its worker starting together never read
a half-written package.

This module is the namespace both sides use, as the proxy worker's `protos` package is: every
message (`StreamingMessage`, `TypedData`, `StatusResult`, ...) plus `FunctionRpcStub`,
`FunctionRpcServicer` and `add_FunctionRpcServicer_to_server`. The worker hands it to
azure-functions-runtime, which builds its responses from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc_tools
from grpc_tools import protoc

HERE = Path(__file__).parent
PROTOS = HERE / "protos"
GENERATED = HERE / "_generated"
_SOURCES = ("FunctionRpc.proto", "identity/ClaimsIdentityRpc.proto", "shared/NullableTypes.proto")
# protoc's absolute imports of the proto folders, made relative to the generated package.
_ABSOLUTE_IMPORT = re.compile(r"^from (shared|identity) import ", re.MULTILINE)
_GRPC_IMPORT = re.compile(r"^import FunctionRpc_pb2 as ", re.MULTILINE)


def _stamp() -> str:
    digest = hashlib.sha256(version("grpcio-tools").encode())
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (PROTOS / name).read_bytes())
    return digest.hexdigest()


def _compile(into: Path) -> None:
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={into}", f"--grpc_python_out={into}"]
    if protoc.main([*args, *_SOURCES]) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS}")
    for path in into.rglob("*.py"):
        text = path.read_text()
        depth = "." if path.parent == into else ".."
        text = _ABSOLUTE_IMPORT.sub(rf"from {depth}\1 import ", text)
        text = _GRPC_IMPORT.sub("from . import FunctionRpc_pb2 as ", text)
        path.write_text(text)
    for folder in (into, into / "shared", into / "identity"):
        (folder / "__init__.py").touch()


def ensure_generated() -> None:
    """Generate `_generated/` unless it is current."""
    stamp = _stamp()
    stamp_file = GENERATED / "STAMP"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return
    staging = Path(tempfile.mkdtemp(prefix="_generated-", dir=HERE))
    try:
        _compile(staging)
        (staging / "STAMP").write_text(stamp)
        old = HERE / f"_old-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            GENERATED.rename(old)
        try:
            staging.rename(GENERATED)
        except OSError:  # another process swapped in the same stamp first
            if not (stamp_file.is_file() and stamp_file.read_text() == stamp):
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load() -> dict[str, Any]:
    ensure_generated()
    names: dict[str, Any] = {}
    for module_name in ("shared.NullableTypes_pb2", "identity.ClaimsIdentityRpc_pb2", "FunctionRpc_pb2"):
        module: ModuleType = importlib.import_module(f"{__package__}._generated.{module_name}")
        names.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    grpc_module = importlib.import_module(f"{__package__}._generated.FunctionRpc_pb2_grpc")
    for name in ("FunctionRpcStub", "FunctionRpcServicer", "add_FunctionRpcServicer_to_server"):
        names[name] = getattr(grpc_module, name)
    return names


_NAMES = _load()


def __getattr__(name: str) -> Any:  # the messages, typed Any for mypy: generated code has no stubs
    try:
        return _NAMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
