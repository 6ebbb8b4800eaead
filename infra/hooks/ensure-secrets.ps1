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
