// The site's CORS settings, refused when the CORS protocol forbids them. On Flex Consumption the
// Functions host builds ASP.NET Core's CORS policy from them (these origins, any header, any
// method, credentials if asked) and applies it before any function runs; tools/funchost/cors.py
// does the same locally. '*' allows any origin only as the only entry (in a list the host compares
// it as a literal, which no browser sends), and never with credentials.
//
// A module of its own because fail() is beyond checkov's Bicep parser: `make infra-check` skips
// this file, which declares no resource, so checkov still parses and checks everything else.

targetScope = 'resourceGroup'

@description('Origins browser apps may call from (main.bicep\'s corsAllowedOrigins).')
param allowedOrigins array

@description('Whether those origins may send credentials (main.bicep\'s corsSupportCredentials).')
param supportCredentials bool

@description('allowedOrigins, once checked.')
output allowedOrigins array = !contains(allowedOrigins, '*') ? allowedOrigins : supportCredentials ? fail('corsAllowedOrigins: \'*\' cannot be used with corsSupportCredentials (the CORS protocol does not allow any origin with credentials); list the origins instead.') : length(allowedOrigins) > 1 ? fail('corsAllowedOrigins: \'*\' allows any origin only on its own; in a list it matches no origin.') : allowedOrigins
