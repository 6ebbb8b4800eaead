"""infra/ agrees with the code: app settings, Cosmos containers, blob containers and queues.

No Azure and no Bicep compiler: main.bicep keeps what these tests read in plain literals (the
`appSettings` object, `cosmosContainers`, `blobContainers`, `queues`, string variables and
parameter defaults), and a few regular expressions read them. checkov (`make infra-check`) checks
the rest of the file.
"""

import json
import os
import re
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import Settings
from shared.services.provisioning import required_resources

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "main.bicep"
AZURE_OPENAI_MODULE = ROOT / "infra" / "modules" / "azure-openai-access.bicep"
# Built-in role Cognitive Services OpenAI User: inference on Azure OpenAI with an Entra ID token.
COGNITIVE_SERVICES_OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"

# In local.settings.sample.json, never in Azure.
LOCAL_ONLY = {
    "AzureWebJobsStorage": "a connection string; in Azure the host and Cirrus use the identity",
    "COSMOS_KEY": "the emulator's key; Cosmos DB local auth is off in Azure",
    "CIRRUS_LOCAL_PROVIDER_URL": "read by the local model file only",
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption takes the runtime from functionAppConfig, not a setting",
}
# In Azure only: identity-based storage (Settings reads some), Entra ID ingestion for Application
# Insights, and host.json values overridden per deployment.
AZURE_ONLY = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AzureFunctionsJobHost__extensions__queues__batchSize",
}
# Read by the Functions host or a library, not by Settings; in both places.
HOST_SETTINGS = {"PYTHON_ENABLE_INIT_INDEXING", "LITELLM_LOCAL_MODEL_COST_MAP"}
SECRETS = ("CIRRUS_MASTER_KEY", "CIRRUS_KEY_HASH_SECRET")

_PARAM = re.compile(r"^param (\w+) (\w+)(?: = (.+))?$", re.M)
_STRING_VAR = re.compile(r"^var (\w+) = '([^'$]*)'$", re.M)
_INTERPOLATION = re.compile(r"\$\{(\w+)\}")
_CHECKOV_SKIP = re.compile(r"checkov:skip=([A-Z0-9_]+)(:?)(.*)$")


def bicep() -> str:
    return BICEP.read_text(encoding="utf-8")


def every_bicep() -> str:
    """main.bicep and its modules: what checkov scans."""
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted((ROOT / "infra").rglob("*.bicep")))


def declaration(text: str, header: str) -> str:
    """A top-level `resource` or `module` declaration, from the line matching `header` (a regular
    expression) to its closing brace at column 0."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(header, line))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == "}")
    return "\n".join(lines[start : end + 1])


def block(header: str) -> list[str]:
    """The lines of a top-level `var` literal, from its header to the closing bracket at column 0."""
    lines = bicep().splitlines()
    start = lines.index(header)
    end = next(i for i in range(start + 1, len(lines)) if lines[i] in ("}", "]"))
    return lines[start + 1 : end]


def params() -> dict[str, tuple[str, str | None]]:
    return {m[1]: (m[2], m[3]) for m in _PARAM.finditer(bicep())}


def string_vars() -> dict[str, str]:
    return {m[1]: m[2] for m in _STRING_VAR.finditer(bicep())}


def resolve(expr: str) -> str | None:
    """A Bicep expression's value when it is known before deployment, else None (a runtime value)."""
    expr = expr.strip()
    known = string_vars()
    if m := re.fullmatch(r"'(.*)'", expr):
        missing = [name for name in _INTERPOLATION.findall(m[1]) if name not in known]
        return None if missing else _INTERPOLATION.sub(lambda n: known[n[1]], m[1])
    if expr in known:
        return known[expr]
    if m := re.fullmatch(r"string\((\w+)\)", expr):
        expr = m[1]
    kind, default = params().get(expr, ("", None))
    if default is None:
        return None
    return default.strip("'") if kind == "string" else default


@cache
def app_settings() -> dict[str, str]:
    """The `appSettings` object: setting name -> its Bicep expression."""
    settings = {}
    for line in block("var appSettings = {"):
        m = re.fullmatch(r"  (\w+): (.+)", line)
        assert m, f"appSettings holds one `NAME: value` a line, got {line!r}"
        assert m[1] not in settings, f"{m[1]} is set twice"
        settings[m[1]] = m[2]
    return settings


def aliases() -> set[str]:
    return {field.alias for field in Settings.model_fields.values()}


def sample_settings() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]


def azure_settings() -> Settings:
    """Settings as the deployed app would read them: Bicep's known values, stand-ins for the rest."""
    values = {name: resolve(expr) for name, expr in app_settings().items()}
    stand_ins = {
        "CIRRUS_MASTER_KEY": "m" * 40,
        "CIRRUS_KEY_HASH_SECRET": "h" * 40,
        # Bicep turns the master key off by default and refuses to deploy without Entra ID then.
        "CIRRUS_ENTRA_ISSUERS": "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0",
        "CIRRUS_ENTRA_AUDIENCE": "api://cirrus",
        "COSMOS_ENDPOINT": "https://cosmos.documents.azure.com:443/",
        "AzureWebJobsStorage__accountName": "stcirrus",
        "AzureWebJobsStorage__blobServiceUri": "https://stcirrus.blob.core.windows.net/",
        "AzureWebJobsStorage__queueServiceUri": "https://stcirrus.queue.core.windows.net/",
    }
    known = {name: value for name, value in values.items() if value is not None and name in aliases()}
    return Settings(_env_file=None, **{**known, **stand_ins})


def test_bicep_sets_every_setting_cirrus_reads_in_azure():
    expected = (aliases() - set(LOCAL_ONLY)) | HOST_SETTINGS | AZURE_ONLY
    actual = set(app_settings())
    assert not expected - actual, f"missing from infra/main.bicep appSettings: {sorted(expected - actual)}"
    assert not actual - expected, f"not read by Cirrus or the host: {sorted(actual - expected)}"


def test_local_sample_and_bicep_differ_only_by_the_documented_settings():
    local = set(sample_settings()) - set(LOCAL_ONLY)
    azure = set(app_settings()) - AZURE_ONLY
    assert local == azure, f"only locally: {sorted(local - azure)}; only in Azure: {sorted(azure - local)}"
    assert set(LOCAL_ONLY) <= set(sample_settings())


def test_local_only_settings_and_keys_never_reach_azure():
    assert not set(LOCAL_ONLY) & set(app_settings())
    text = every_bicep()
    for forbidden in ("listKeys(", "AccountKey=", "connectionStrings", "FUNCTIONS_EXTENSION_VERSION"):
        assert forbidden not in text
    assert "allowSharedKeyAccess: false" in text
    assert "allowBlobPublicAccess: false" in text
    assert "disableLocalAuth: true" in text
    assert "DisableLocalAuth: true" in text  # Application Insights: Entra ID ingestion only


@pytest.mark.parametrize("name", SECRETS)
def test_secrets_are_key_vault_references(name):
    assert app_settings()[name].startswith("'@Microsoft.KeyVault(SecretUri=")


def test_bicep_values_are_valid_settings_in_azure_mode():
    settings = azure_settings()
    assert not settings.is_local
    assert resolve(app_settings()["CIRRUS_ENV"]) == "azure"
    assert settings.cosmos_key is None and settings.storage_connection_string is None


def test_cosmos_containers_match_the_code():
    items, current = [], {}
    for line in block("var cosmosContainers = ["):
        if m := re.fullmatch(r"\s+(name|partitionKey|defaultTtl): (.+)", line):
            current[m[1]] = m[2].strip("'")
        elif line.strip() == "}":
            items.append((current["name"], current["partitionKey"], int(current["defaultTtl"])))
            current = {}
    assert len(items) == len(set(items))
    code = required_resources(azure_settings()).cosmos_containers
    assert set(items) == {(c.name, c.partition_key, c.default_ttl) for c in code}
    database = resolve(app_settings()["COSMOS_DATABASE"])
    assert database == azure_settings().cosmos_database == string_vars()["cosmosDatabaseName"]


def test_blob_containers_match_the_code():
    names = [resolve(line) for line in block("var blobContainers = [")]
    assert set(names) == set(required_resources(azure_settings()).blob_containers)


def test_queues_are_the_codes_and_their_poison_queues():
    settings = azure_settings()
    names = [resolve(line) for line in block("var queues = [")]
    triggered = {settings.jobs_queue, settings.batch_queue, settings.usage_queue}
    assert len(names) == len(set(names))
    assert set(required_resources(settings).queues) <= set(names)
    assert set(names) == triggered | {f"{queue}-poison" for queue in triggered}


def test_queue_batch_size_default_is_host_json():
    host = json.loads((ROOT / "host.json").read_text())
    assert params()["queueBatchSize"][1] == str(host["extensions"]["queues"]["batchSize"])
    assert app_settings()["AzureFunctionsJobHost__extensions__queues__batchSize"] == "string(queueBatchSize)"


def test_every_checkov_skip_gives_a_reason():
    skips = [m for line in every_bicep().splitlines() if (m := _CHECKOV_SKIP.search(line))]
    assert skips
    for check, colon, reason in (m.groups() for m in skips):
        assert colon and len(reason.strip()) >= 20, f"{check} is skipped without a written reason"


def test_outputs_are_named_as_the_app_settings_they_feed():
    outputs = re.findall(r"^output (\w+) ", bicep(), re.M)
    for name in outputs:
        assert name.startswith(("AZURE_", "SERVICE_")) or name in app_settings(), name


def test_parameters_file_names_real_parameters_and_every_required_one():
    declared = params()
    given = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared)
    assert {name for name, (_, default) in declared.items() if default is None} <= set(given)


def test_azure_yaml_deploys_this_folder_as_a_python_function_app():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert config["infra"]["path"] == "infra"
    assert config["services"]["api"] == {"project": ".", "language": "python", "host": "function"}


def test_azure_runs_the_python_that_make_builds_lints_and_type_checks_for():
    site = resources()["functionApp"][1]
    runtime = re.search(r"runtime: \{\s*name: '(\w+)'\s*version: '([\d.]+)'\s*\}", site)
    assert runtime, "functionAppConfig.runtime is a literal name and version"
    name, version = runtime.groups()
    # azure-functions 2.x and azure-functions-runtime (requirements.txt) need Python 3.13.
    assert (name, version) == ("python", "3.13")
    tools = ROOT / "tools"
    assert re.search(rf"^PYTHON_VERSION := {re.escape(version)}$", (ROOT / "Makefile").read_text(), re.M)
    assert f'target-version = "py{version.replace(".", "")}"' in (tools / "ruff.toml").read_text()
    assert re.search(rf"^python_version = {re.escape(version)}$", (tools / "mypy.ini").read_text(), re.M)


def test_keyless_azure_openai_is_off_by_default_and_assigns_openai_user_on_the_account():
    declared = params()
    assert declared["azureOpenAiAccountName"] == ("string", "''")
    assert declared["azureOpenAiResourceGroup"] == ("string", "''")

    # main.bicep: the module only when the account is named, deployed to the account's resource
    # group (this one when none is given), for the app's identity.
    module = declaration(bicep(), r"module azureOpenAiAccess 'modules/azure-openai-access\.bicep' = ")
    assert "= if (!empty(azureOpenAiAccountName)) {" in module.splitlines()[0]
    account_group = "empty(azureOpenAiResourceGroup) ? resourceGroup().name : azureOpenAiResourceGroup"
    assert f"  scope: resourceGroup({account_group})\n" in module
    assert "accountName: azureOpenAiAccountName" in module
    assert "identityId: identity.id" in module
    assert "principalId: identity.properties.principalId" in module
    assert re.search(r"^    azureOpenAiAccess$", declaration(bicep(), r"resource functionApp "), re.M)
    endpoint = "empty(azureOpenAiAccountName) ? '' : azureOpenAiAccess!.outputs.endpoint"
    assert f"\noutput AZURE_OPENAI_ENDPOINT string = {endpoint}\n" in bicep()

    # The module: the role on the existing account itself, named deterministically.
    text = AZURE_OPENAI_MODULE.read_text(encoding="utf-8")
    account = declaration(text, r"resource account 'Microsoft\.CognitiveServices/accounts@.+' existing = \{$")
    assert "  name: accountName" in account
    role_id = re.search(r"^var (\w+) = '" + COGNITIVE_SERVICES_OPENAI_USER + "'$", text, re.M)
    assert role_id, "the module names the Cognitive Services OpenAI User role id"
    assignment = declaration(text, r"resource \w+ 'Microsoft\.Authorization/roleAssignments@[\d-]+' = \{$")
    assert "  scope: account\n" in assignment
    assert f"  name: guid(account.id, identityId, {role_id[1]})\n" in assignment
    assert (
        f"roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', {role_id[1]})"
        in assignment
    )
    assert "principalId: principalId" in assignment
    assert "principalType: 'ServicePrincipal'" in assignment

    # azd hands both parameters over from the environment, empty unless set.
    given = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert given["azureOpenAiAccountName"] == {"value": "${CIRRUS_AZURE_OPENAI_ACCOUNT_NAME}"}
    assert given["azureOpenAiResourceGroup"] == {"value": "${CIRRUS_AZURE_OPENAI_RESOURCE_GROUP}"}


# --- storage role scopes ---------------------------------------------------------------------------

_RESOURCE = re.compile(r"^resource (\w+) '([^'@]+)@[^']+'(?: existing)? = ", re.M)
_ASSIGNMENT_FIELD = re.compile(
    r"^\s+(?:scope: (?P<scope>\w+)(?:\[i\])?"
    r"|roleDefinitionId: subscriptionResourceId\('Microsoft\.Authorization/roleDefinitions', "
    r"roles\.(?P<role>\w+)\)"
    r"|principalId: (?P<principal>[\w.]+))$",
    re.M,
)
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
APP = "identity.properties.principalId"
DEPLOYER = "deployIdentity.properties.principalId"


def resources() -> dict[str, tuple[str, str]]:
    """Top-level resources of main.bicep: name -> (type, declaration text, loops included)."""
    text = bicep()
    lines = text.splitlines()
    found = {}
    for m in _RESOURCE.finditer(text):
        start = text.count("\n", 0, m.start())
        end = next(i for i in range(start + 1, len(lines)) if lines[i] in ("}", "]"))
        found[m[1]] = (m[2], "\n".join(lines[start : end + 1]))
    return found


def storage_role_assignments() -> dict[str, tuple[str, str, str]]:
    """Role assignments of Storage roles: name -> (scope resource, role, principal)."""
    assignments = {}
    for name, (kind, text) in resources().items():
        if kind != "Microsoft.Authorization/roleAssignments":
            continue
        fields: dict[str, str] = {}
        for m in _ASSIGNMENT_FIELD.finditer(text):
            fields.update({key: value for key, value in m.groupdict().items() if value})
        assert "scope" in fields, f"{name} has no scope: it would apply to the whole resource group"
        if fields["role"].startswith("storage"):
            assignments[name] = (fields["scope"], fields["role"], fields["principal"])
    return assignments


def test_storage_roles_are_scoped_to_containers_and_queues_never_the_account():
    kinds = {name: kind for name, (kind, _) in resources().items()}
    assignments = storage_role_assignments()
    assert assignments
    for name, (scope, role, _) in assignments.items():
        assert scope != "storage", f"{name} gives {role} on the whole storage account"
        expected = CONTAINER if role.startswith("storageBlob") else QUEUE
        assert kinds[scope] == expected, f"{name} gives {role} on {scope}, not a {expected.rsplit('/', 1)[1]}"
    assert "storageBlobDataOwner" not in bicep(), "Blob Data Contributor does what the app needs"


def test_the_apps_identity_has_roles_on_exactly_its_containers_and_queues():
    granted = {
        (scope, role) for scope, role, principal in storage_role_assignments().values() if principal == APP
    }
    assert granted == {
        ("appContainers", "storageBlobDataContributor"),  # blobContainers: uploads, outputs
        ("hostBlobContainers", "storageBlobDataContributor"),  # the host's leases and keys
        ("packageContainer", "storageBlobDataReader"),
        ("appQueues", "storageQueueDataContributor"),  # queues: the triggered ones and their poison queues
        ("replyQueueResources", "storageQueueDataMessageSender"),  # replyQueues: send only
    }
    assert {resolve(line) for line in block("var hostContainers = [")} == {
        "azure-webjobs-hosts",
        "azure-webjobs-secrets",
    }
    loops = {"appContainers": "blobContainers", "hostBlobContainers": "hostContainers", "appQueues": "queues"}
    loops["replyQueueResources"] = "replyQueues"
    for resource, names in loops.items():
        assert f"  for name in {names}: {{" in resources()[resource][1]
    for name, (scope, _, _) in storage_role_assignments().items():
        if scope in loops:  # `scope: appContainers[i]`: the i-th of the same list
            assert f"  for (name, i) in {loops[scope]}: {{" in resources()[name][1], name


def test_the_code_package_is_read_only_for_the_app_and_written_by_the_deployment_identity():
    assignments = storage_role_assignments().values()
    on_package = {(role, principal) for scope, role, principal in assignments if scope == "packageContainer"}
    assert on_package == {("storageBlobDataReader", APP), ("storageBlobDataContributor", DEPLOYER)}
    assert [principal for _, _, principal in assignments].count(DEPLOYER) == 1, "its one role: the package"
    assert bicep().count(DEPLOYER) == 1
    site = resources()["functionApp"][1]
    deployment = site[site.index("deployment: {") : site.index("runtime: {")]
    assert "value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'" in deployment
    assert "userAssignedIdentityResourceId: deployIdentity.id" in deployment
    assert "keyVaultReferenceIdentity: identity.id" in site
    # Cirrus and the host sign in as the app's identity, never the deployment one.
    for setting in ("AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID"):
        assert app_settings()[setting] == "identity.properties.clientId"


def test_the_master_key_is_off_by_default_and_never_off_without_entra_admins():
    assert params()["masterKeyEnabled"] == ("bool", "false")
    assert params()["entraIssuers"] == ("string", "''") and params()["entraAudience"] == ("string", "''")
    settings = app_settings()
    assert settings["CIRRUS_MASTER_KEY_ENABLED"] == "identitySettings.outputs.masterKeyEnabled"
    assert settings["CIRRUS_ENTRA_AUDIENCE"] == "identitySettings.outputs.entraAudience"
    assert settings["CIRRUS_ENTRA_ISSUERS"] == "entraIssuers"
    module = declaration(bicep(), r"module identitySettings 'modules/identity-settings\.bicep' = \{$")
    for name in ("masterKeyEnabled", "entraIssuers", "entraAudience"):
        assert f"{name}: {name}" in module


def identity_output(name: str) -> str:
    text = IDENTITY_MODULE.read_text(encoding="utf-8")
    found = re.search(rf"^output {name} string = (.+)$", text, re.M)
    assert found, f"identity-settings.bicep has the output {name} on one line"
    return found[1]


ISSUER = "https://login.microsoftonline.com/t/v2.0"


@pytest.mark.parametrize(
    ("enabled", "issuers", "audience", "expected"),
    [
        (True, "", "", ("true", "")),
        (False, ISSUER, "api://cirrus", ("false", "api://cirrus")),
        (True, ISSUER, "api://cirrus", ("true", "api://cirrus")),
        (False, "", "", "needs Entra ID admins"),
        (True, ISSUER, "", "together"),
        (True, "", "api://cirrus", "together"),
    ],
)
def test_the_template_refuses_nobody_to_administer_and_half_an_entra_setup(
    enabled, issuers, audience, expected
):
    names = {"masterKeyEnabled": enabled, "entraIssuers": issuers, "entraAudience": audience}

    def both() -> tuple[str, str]:
        return (
            evaluate_bicep(identity_output("masterKeyEnabled"), names),
            evaluate_bicep(identity_output("entraAudience"), names),
        )

    if isinstance(expected, tuple):
        assert both() == expected
    else:
        with pytest.raises(BicepFailure, match=expected):
            both()


def _run_hook(tmp_path, env_values: dict[str, str]) -> dict[str, str]:
    """infra/hooks/ensure-secrets.sh with a stand-in `azd` keeping its environment in a file."""
    store = tmp_path / "azd-env.json"
    store.write_text(json.dumps(env_values))
    azd = tmp_path / "azd"
    azd.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"path = {str(store)!r}\n"
        "env = json.load(open(path))\n"
        "cmd = sys.argv[1:]\n"
        "if cmd[:2] == ['env', 'get-value']:\n"
        "    if cmd[2] not in env: sys.exit(1)\n"
        "    print(env[cmd[2]])\n"
        "elif cmd[:2] == ['env', 'set']:\n"
        "    env[cmd[2]] = cmd[3]; json.dump(env, open(path, 'w'))\n"
    )
    azd.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    subprocess.run(
        ["sh", str(ROOT / "infra" / "hooks" / "ensure-secrets.sh")],
        env={**os.environ, "PATH": path},
        check=True,
    )
    return json.loads(store.read_text())


def test_the_azd_hook_keeps_the_master_key_on_only_while_entra_id_is_not_set(tmp_path):
    fresh = _run_hook(tmp_path, {})
    assert fresh["CIRRUS_MASTER_KEY_ENABLED"] == "true" and len(fresh["CIRRUS_MASTER_KEY"]) >= 32
    assert fresh["CIRRUS_KEY_HASH_SECRET"] != fresh["CIRRUS_MASTER_KEY"]
    entra = _run_hook(tmp_path, {"CIRRUS_ENTRA_ISSUERS": "https://login.microsoftonline.com/t/v2.0"})
    assert "CIRRUS_MASTER_KEY_ENABLED" not in entra  # the Bicep default: off
    chosen = _run_hook(tmp_path, {"CIRRUS_MASTER_KEY_ENABLED": "false", "CIRRUS_MASTER_KEY": "k" * 40})
    assert chosen["CIRRUS_MASTER_KEY_ENABLED"] == "false" and chosen["CIRRUS_MASTER_KEY"] == "k" * 40


# --- CORS ----------------------------------------------------------------------------------------

CORS_MODULE = ROOT / "infra" / "modules" / "cors.bicep"
IDENTITY_MODULE = ROOT / "infra" / "modules" / "identity-settings.bicep"
_BICEP_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+)|(?P<name>\w+)|(?P<op>&&|\|\||==|[!?:(),>]))"
)


class BicepFailure(Exception):
    """A deployment that Bicep's fail() stops, with its message."""


def evaluate_bicep(expression: str, names: dict[str, Any]) -> Any:
    """The value of a Bicep expression built of what cors.bicep and identity-settings.bicep use
    (ternaries, !, &&, ||, >, ==, contains, length, empty, string, fail, names and literals), so
    the refusals are tested, not only read. Parsed into closures, so a ternary evaluates only
    the branch it takes, as ARM's if() does."""
    tokens = [m.group(m.lastgroup or "") for m in _BICEP_TOKEN.finditer(expression)]
    at = 0

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal at
        token = tokens[at]
        assert expected is None or token == expected, (token, expected)
        at += 1
        return token

    def ternary() -> Callable[[], Any]:
        condition = binary()
        if peek() != "?":
            return condition
        take("?")
        then = ternary()
        take(":")
        otherwise = ternary()
        return lambda: then() if condition() else otherwise()

    def binary() -> Callable[[], Any]:
        left = unary()
        while peek() in ("&&", "||", ">", "=="):
            op, a, b = take(), left, unary()
            left = {
                "&&": lambda a=a, b=b: a() and b(),
                "||": lambda a=a, b=b: a() or b(),
                ">": lambda a=a, b=b: a() > b(),
                "==": lambda a=a, b=b: a() == b(),
            }[op]
        return left

    def unary() -> Callable[[], Any]:
        if peek() == "!":
            take()
            operand = unary()
            return lambda: not operand()
        return primary()

    def primary() -> Callable[[], Any]:
        token = take()
        if token == "(":
            inner = ternary()
            take(")")
            return inner
        if token.startswith("'"):
            return lambda: token[1:-1].replace("\\'", "'")
        if token.isdigit():
            return lambda: int(token)
        if peek() != "(":
            return lambda: names[token]
        take("(")
        args = [ternary()]
        while peek() == ",":
            take()
            args.append(ternary())
        take(")")
        return lambda: call(token, [arg() for arg in args])

    def call(function: str, args: list[Any]) -> Any:
        if function == "fail":
            raise BicepFailure(args[0])
        functions = {
            "contains": lambda items, item: item in items,
            "length": len,
            "empty": lambda value: len(value) == 0,
            "string": lambda value: str(value).lower() if isinstance(value, bool) else str(value),
        }
        return functions[function](*args)

    value = ternary()
    assert at == len(tokens), f"unparsed: {tokens[at:]}"
    return value()


def cors_output() -> str:
    text = CORS_MODULE.read_text(encoding="utf-8")
    found = re.search(r"^output allowedOrigins array = (.+)$", text, re.M)
    assert found, "cors.bicep has one output, allowedOrigins, on one line"
    return found[1]


def test_cors_parameters_are_an_origin_list_and_credentials_off_by_default():
    declared = params()
    assert declared["corsAllowedOrigins"] == ("array", "[]")
    assert declared["corsSupportCredentials"] == ("bool", "false")
    module = declaration(bicep(), r"module cors 'modules/cors\.bicep' = \{$")
    assert "allowedOrigins: corsAllowedOrigins" in module
    assert "supportCredentials: corsSupportCredentials" in module
    site = resources()["functionApp"][1]
    cors = re.search(r"\n      cors: \{\n(.*?)\n      \}\n", site, re.S)
    assert cors, "the site's siteConfig sets cors"
    assert cors[1].split("\n") == [
        "        allowedOrigins: cors.outputs.allowedOrigins",  # checked by the module
        "        supportCredentials: corsSupportCredentials",
    ]


@pytest.mark.parametrize(
    ("origins", "credentials"),
    [
        ([], False),
        ([], True),
        (["https://app.example.com"], False),
        (["https://app.example.com", "http://localhost:5173"], True),
        (["*"], False),
    ],
)
def test_cors_origins_pass_through_the_module_unchanged(origins, credentials):
    names = {"allowedOrigins": origins, "supportCredentials": credentials}
    assert evaluate_bicep(cors_output(), names) == origins


@pytest.mark.parametrize(
    ("origins", "credentials", "message"),
    [
        (["*"], True, "cannot be used with corsSupportCredentials"),
        (["https://app.example.com", "*"], True, "cannot be used with corsSupportCredentials"),
        (["https://app.example.com", "*"], False, "only on its own"),
    ],
)
def test_the_template_refuses_a_wildcard_with_credentials_or_in_a_list(origins, credentials, message):
    names = {"allowedOrigins": origins, "supportCredentials": credentials}
    with pytest.raises(BicepFailure, match=message):
        evaluate_bicep(cors_output(), names)


def test_checkov_skips_only_the_modules_using_fail_and_they_declare_no_resource():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("--skip-path") == 1
    assert "--skip-path 'modules/(cors|identity-settings)\\.bicep$$'" in makefile
    for module in (CORS_MODULE, IDENTITY_MODULE):
        assert not re.search(r"^resource ", module.read_text(encoding="utf-8"), re.M)
