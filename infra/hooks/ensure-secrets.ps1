# azd preprovision hook (Windows): the same as ensure-secrets.sh. Gives this azd environment a
# random CIRRUS_MASTER_KEY and CIRRUS_KEY_HASH_SECRET the first time and keeps them after that.
$ErrorActionPreference = 'Stop'

foreach ($name in 'CIRRUS_MASTER_KEY', 'CIRRUS_KEY_HASH_SECRET') {
    $current = azd env get-value $name 2>$null
    if ($LASTEXITCODE -ne 0 -or [string]::IsNullOrWhiteSpace($current)) {
        $bytes = [System.Security.Cryptography.RandomNumberGenerator]::GetBytes(36)
        $value = [Convert]::ToBase64String($bytes).Replace('+', '-').Replace('/', '_').TrimEnd('=')
        azd env set $name $value | Out-Null
        Write-Host "ensure-secrets: generated $name for this environment"
    }
}

# The Bicep turns the master key off unless told otherwise, and refuses that without Entra ID
# admins: an environment with neither keeps the master key on, so a first `azd up` works.
$issuers = azd env get-value CIRRUS_ENTRA_ISSUERS 2>$null
if ($LASTEXITCODE -ne 0) { $issuers = '' }
$enabled = azd env get-value CIRRUS_MASTER_KEY_ENABLED 2>$null
if ($LASTEXITCODE -ne 0) { $enabled = '' }
if ([string]::IsNullOrWhiteSpace($issuers) -and [string]::IsNullOrWhiteSpace($enabled)) {
    azd env set CIRRUS_MASTER_KEY_ENABLED true | Out-Null
    Write-Host "ensure-secrets: no Entra ID issuers set, so the master key stays on (CIRRUS_MASTER_KEY_ENABLED=true)"
}
