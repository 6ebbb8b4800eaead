// Who may administer Cirrus, refused when nobody could: without the master key only Entra ID admins
// (tokens with the Cirrus.Admin role) can manage keys and policies, so masterKeyEnabled=false needs
// Entra ID issuers; and issuers need the audience their tokens must name, and the reverse.
//
// A module of its own because fail() is beyond checkov's Bicep parser: `make infra-check` skips
// this file, which declares no resource (as modules/cors.bicep).

targetScope = 'resourceGroup'

@description('main.bicep\'s masterKeyEnabled.')
param masterKeyEnabled bool

@description('main.bicep\'s entraIssuers (comma separated).')
param entraIssuers string

@description('main.bicep\'s entraAudience.')
param entraAudience string

@description('CIRRUS_MASTER_KEY_ENABLED, once checked.')
output masterKeyEnabled string = masterKeyEnabled || !empty(entraIssuers) ? string(masterKeyEnabled) : fail('masterKeyEnabled=false needs Entra ID admins: set entraIssuers and entraAudience, or masterKeyEnabled=true.')

@description('CIRRUS_ENTRA_AUDIENCE, once checked.')
output entraAudience string = empty(entraIssuers) == empty(entraAudience) ? entraAudience : fail('Set entraIssuers and entraAudience together.')
