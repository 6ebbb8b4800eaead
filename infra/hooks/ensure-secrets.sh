#!/bin/sh
# azd preprovision hook: give this azd environment a random CIRRUS_MASTER_KEY and
# CIRRUS_KEY_HASH_SECRET the first time, and keep them after that (a changed hash secret would
# invalidate every virtual key). main.parameters.json passes them to Bicep, which stores them in
# Key Vault; the app reads them from there. To rotate the master key: azd env set, then azd provision.
#
# The Bicep turns the master key off unless told otherwise, and refuses that without Entra ID
# admins (CIRRUS_ENTRA_ISSUERS). An environment with neither keeps the master key on, so a first
# `azd up` works; the README's Identity section turns it off once Entra ID is set up.
set -eu

random_secret() {
  # 48 URL-safe characters from 36 random bytes.
  head -c 36 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

for name in CIRRUS_MASTER_KEY CIRRUS_KEY_HASH_SECRET; do
  current="$(azd env get-value "$name" 2>/dev/null || true)"
  if [ -z "$current" ]; then
    azd env set "$name" "$(random_secret)" >/dev/null
    echo "ensure-secrets: generated $name for this environment"
  fi
done

issuers="$(azd env get-value CIRRUS_ENTRA_ISSUERS 2>/dev/null || true)"
enabled="$(azd env get-value CIRRUS_MASTER_KEY_ENABLED 2>/dev/null || true)"
if [ -z "$issuers" ] && [ -z "$enabled" ]; then
  azd env set CIRRUS_MASTER_KEY_ENABLED true >/dev/null
  echo "ensure-secrets: no Entra ID issuers set, so the master key stays on (CIRRUS_MASTER_KEY_ENABLED=true)"
fi
