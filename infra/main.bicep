// Cirrus on Azure: everything the app needs, wired by one user-assigned managed identity (and a
// second, Flex Consumption's deployment identity, that only writes the code package).
//
//   azd up                                    (azure.yaml at the top level; parameters: main.parameters.json)
//   az deployment group create -g <rg> -f infra/main.bicep \
//     -p environmentName=<name> masterKey=<secret> keyHashSecret=<another secret>   (infra/README.md)
//
// Function App (Flex Consumption, Python 3.13) · Storage (blobs, queues, deployment package) ·
// Cosmos DB for NoSQL (serverless by default) · Key Vault (master key, hash secret, provider keys) ·
// Application Insights on Log Analytics · optionally, keyless access to an existing Azure OpenAI
// account (azureOpenAiAccountName; modules/azure-openai-access.bicep). No connection strings and
// no keys anywhere: shared-key access is off on Storage, local auth is off on Cosmos DB and
// Application Insights, and secrets reach the app as Key Vault references.
//
// The app's settings are the `appSettings` object below, one key a line, so that
// tests/unit/test_infra.py can compare its keys with shared/config.py's Settings and with
// local.settings.sample.json, and the containers and queues with shared/services/provisioning.py.
// `make infra-check` runs checkov on this file; every skipped check carries its reason beside it.

targetScope = 'resourceGroup'

// --- parameters --------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd: AZURE_ENV_NAME); seeds resource names and tags.')
param environmentName string

@description('Region for every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('The model_list file, relative to the app root (CIRRUS_MODEL_CONFIG). It is deployed with the code.')
param modelConfig string = 'shared/model_list.yaml'

@description('Comma-separated app-setting names the model file reads as os.environ/NAME secrets, e.g. OPENAI_API_KEY,ANTHROPIC_API_KEY. Each becomes a Key Vault reference to the secret of the same name in lower case with dashes (openai-api-key).')
param providerKeyNames string = ''

@description('Further plain app settings the model file reads as os.environ/NAME (endpoints, API versions), e.g. {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"}. Never secrets: put those in Key Vault (providerKeyNames).')
param modelSettings object = {}

@secure()
@minLength(32)
@description('CIRRUS_MASTER_KEY: the admin key, a random secret of at least 32 characters. Stored in Key Vault on every deployment, so pass the same value each time (azd keeps one per environment: infra/hooks; otherwise read it back with az keyvault secret show).')
param masterKey string

@secure()
@minLength(32)
@description('CIRRUS_KEY_HASH_SECRET: the HMAC key virtual keys are stored under, at least 32 characters and not the master key. Changing it invalidates every virtual key.')
param keyHashSecret string

@description('CIRRUS_MASTER_KEY_ENABLED: whether the master key is accepted. Off by default: admins use Entra ID tokens with the Cirrus.Admin role (entraIssuers, entraAudience). Turn it on for a first deployment without Entra ID, or for break-glass access.')
param masterKeyEnabled bool = false

@description('CIRRUS_ENTRA_ISSUERS: comma-separated Entra ID issuers whose tokens Cirrus accepts, e.g. https://login.microsoftonline.com/<tenant id>/v2.0 (https only). Empty: Cirrus keys only, and then masterKeyEnabled must be true.')
param entraIssuers string = ''

@description('CIRRUS_ENTRA_AUDIENCE: Cirrus\'s app registration, by client id or app ID URI (api://...), that tokens must be issued for. Set with entraIssuers.')
param entraAudience string = ''

@description('An OTLP/HTTP collector to send traces, metrics and logs to as well (OTEL_EXPORTER_OTLP_ENDPOINT); empty: Application Insights only.')
param otlpEndpoint string = ''

@description('CIRRUS_TELEMETRY_SAMPLING: which traces are exported to Application Insights: all (every request, dependency and exception), a share such as 25%, or at most a rate such as 5/s. Logs and metrics are never sampled.')
param telemetrySampling string = 'all'

@minValue(0)
@maxValue(20)
@description('Always-ready instances for the HTTP functions (0: scale to zero; each one is billed while idle).')
param alwaysReadyInstances int = 0

@minValue(40)
@maxValue(1000)
@description('Most instances the app may scale out to (Flex Consumption allows 40 to 1000).')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Memory per instance in MB; CPU scales with it (2048 MB is one vCPU).')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP requests per instance before Flex Consumption adds one. Python\'s platform default is 1; Cirrus is async and mostly waits on providers.')
param httpPerInstanceConcurrency int = 32

@minValue(1)
@maxValue(32)
@description('Queue messages an instance takes at a time (host.json extensions.queues.batchSize; this app setting overrides it). Also the queue triggers\' scale target per instance.')
param queueBatchSize int = 16

@minValue(1)
@maxValue(1000)
@description('Batch requests per queue message (CIRRUS_BATCH_CHUNK_SIZE).')
param batchChunkSize int = 100

@minValue(1)
@maxValue(256)
@description('Requests in flight per batch in one worker, shared by its chunk messages (CIRRUS_BATCH_CONCURRENCY).')
param batchConcurrency int = 8

@allowed([
  'serverless'
  'autoscale'
])
@description('Cosmos DB capacity: serverless (pay per request unit, nothing when idle) or provisioned autoscale throughput shared by the database.')
param cosmosCapacityMode string = 'serverless'

@minValue(1000)
@maxValue(1000000)
@description('Autoscale maximum RU/s for the database when cosmosCapacityMode is autoscale (it scales between 10% of this and this).')
param cosmosAutoscaleMaxThroughput int = 1000

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Storage redundancy.')
param storageSku string = 'Standard_LRS'

@minValue(7)
@maxValue(90)
@description('Days a deleted Key Vault stays recoverable (purge protection keeps its name reserved that long).')
param keyVaultSoftDeleteDays int = 7

@minValue(30)
@maxValue(730)
@description('Log Analytics retention in days.')
param logRetentionDays int = 30

@description('Object id of the person or pipeline deploying (azd: AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer so it can set provider keys. Empty: no assignment.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principal principalId is.')
param principalType string = 'User'

@description('Keyless Azure OpenAI: name of an existing Azure OpenAI or Azure AI Services account (Microsoft.CognitiveServices/accounts, kind OpenAI or AIServices). The app\'s identity gets Cognitive Services OpenAI User on it, and azure/ deployments without an api_key sign in with that identity. Empty: no assignment.')
param azureOpenAiAccountName string = ''

@description('Resource group of azureOpenAiAccountName, in this subscription. Empty: this resource group.')
param azureOpenAiResourceGroup string = ''

@description('Queues that jobs may name as reply_queue, e.g. ["nightly-results"]. Each is created here, and the app\'s identity may only add messages to it (Storage Queue Data Message Sender on that queue). Its roles reach no other queue, so a reply to a queue not listed fails (logged) in Azure.')
param replyQueues array = []

@description('Origins browser apps may call Cirrus from, e.g. ["https://app.example.com"]: the site\'s CORS, which the Functions host applies before any function runs (preflights, Access-Control-Allow-Origin). Each is scheme://host[:port], no path or trailing slash. Empty: no browser app on another origin. \'*\' allows any origin, only on its own and only without corsSupportCredentials.')
param corsAllowedOrigins array = []

@description('Access-Control-Allow-Credentials: whether browser apps on corsAllowedOrigins may send cookies or client certificates. Cirrus authenticates with keys in headers, which need no credentials. Refused with \'*\'.')
param corsSupportCredentials bool = false

// --- names -------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  app: 'cirrus'
}
var identityName = 'id-cirrus-${resourceToken}'
var deployIdentityName = 'id-cirrus-deploy-${resourceToken}'
var storageAccountName = 'stcirrus${resourceToken}'
var cosmosAccountName = 'cosmos-cirrus-${resourceToken}'
var keyVaultName = 'kv-cirrus-${take(resourceToken, 10)}'
var logAnalyticsName = 'log-cirrus-${resourceToken}'
var appInsightsName = 'appi-cirrus-${resourceToken}'
var planName = 'plan-cirrus-${resourceToken}'
var functionAppName = 'func-cirrus-${resourceToken}'

// What the code uses (shared/config.py defaults; shared/services/provisioning.py lists them).
var cosmosDatabaseName = 'cirrus'
var uploadsContainer = 'uploads'
var outputsContainer = 'outputs'
var jobsQueue = 'cirrus-jobs'
var batchQueue = 'cirrus-batches'
var usageQueue = 'cirrus-usage'

// Every Cosmos container the code uses: partitioned on the synthetic /pk, TTL on with no default
// (items opt in with their own `ttl`).
var cosmosContainers = [
  {
    name: 'sessions'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'usage'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'keys'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'audit'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'files'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'batches'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'jobs'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'cache'
    partitionKey: '/pk'
    defaultTtl: -1
  }
  {
    name: 'responses'
    partitionKey: '/pk'
    defaultTtl: -1
  }
]

// Blob containers the code uses. The Flex deployment package container is infrastructure only.
var blobContainers = [
  uploadsContainer
  outputsContainer
]
var deploymentContainer = 'app-package-${take(resourceToken, 10)}'
// The Functions host's own containers on AzureWebJobsStorage: timer and singleton leases and the
// host id (azure-webjobs-hosts), and the host's keys (azure-webjobs-secrets). Created here because
// the identity's roles reach these containers only, not the account where it could create them.
var hostContainers = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

// Every queue a function triggers on, and its poison queue (the host moves a message there after
// host.json's maxDequeueCount failures; the batch and jobs poison queues have triggers of their own).
var queues = [
  jobsQueue
  '${jobsQueue}-poison'
  batchQueue
  '${batchQueue}-poison'
  usageQueue
  '${usageQueue}-poison'
]

var keyVaultUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/'
var masterKeySecretName = 'cirrus-master-key'
var keyHashSecretName = 'cirrus-key-hash-secret'

// Built-in role definitions. Storage roles are assigned on single containers and queues, never on
// the account (tests/unit/test_infra.py checks it).
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}
// Cosmos DB Built-in Data Contributor (a data-plane role, assigned through sqlRoleAssignments).
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

// --- identity ----------------------------------------------------------------------------------

// The app's identity: the host, Cirrus's code and the Key Vault references all use this one.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

// Flex Consumption's deployment identity (functionAppConfig.deployment.storage): the platform
// writes each published package with it and reads it back to start instances. Nothing in Cirrus
// uses it, and its one role is on the package container, so the app's own identity can keep
// that container read-only.
resource deployIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: deployIdentityName
  location: location
  tags: tags
}

// --- monitoring --------------------------------------------------------------------------------

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    // Ingestion by Entra ID only: the host and the app's OpenTelemetry exporter both sign in with
    // the identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and need Monitoring Metrics Publisher.
    DisableLocalAuth: true
  }
}

// --- storage -----------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches Storage over its public endpoint; access is by Entra ID only (shared keys are off), so there is no network perimeter to default-deny. Add a VNet and private endpoints to close it.
  //checkov:skip=CKV_AZURE_59: Public network access stays on for the same reason as CKV_AZURE_35; anonymous and shared-key access are both off.
  //checkov:skip=CKV_AZURE_206: Locally redundant by default for cost (uploads, outputs and queue messages are working data); pass storageSku=Standard_ZRS or Standard_GZRS for more.
  //checkov:skip=CKV_AZURE_43: The name is 'stcirrus' plus uniqueString(): 21 lower-case letters and digits, within the rules; checkov cannot evaluate uniqueString().
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource appContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for name in blobContainers: {
    parent: blobService
    name: name
    properties: {
      publicAccess: 'None'
    }
  }
]

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource hostBlobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for name in hostContainers: {
    parent: blobService
    name: name
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource appQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for name in queues: {
    parent: queueService
    name: name
  }
]

resource replyQueueResources 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for name in replyQueues: {
    parent: queueService
    name: name
  }
]

// --- Cosmos DB ---------------------------------------------------------------------------------

var cosmosCapabilities = cosmosCapacityMode == 'serverless' ? [
  {
    name: 'EnableServerless'
  }
] : []
// Serverless accounts take no throughput; provisioned ones share autoscale RU/s across containers.
var cosmosDatabaseOptions = cosmosCapacityMode == 'serverless' ? {} : {
  autoscaleSettings: {
    maxThroughput: cosmosAutoscaleMaxThroughput
  }
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  //checkov:skip=CKV_AZURE_99: No IP firewall: the app on Flex Consumption without VNet integration has no fixed outbound addresses; access needs an Entra ID token with the data-plane role (local auth is off).
  //checkov:skip=CKV_AZURE_101: Public network access stays on for the same reason as CKV_AZURE_99; add a VNet and a private endpoint to turn it off.
  name: cosmosAccountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: cosmosCapabilities
    disableLocalAuth: true
    // Containers come from this file only: nothing can change them with keys at run time.
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: 'Continuous7Days'
      }
    }
  }
}

resource cosmosDatabase 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: cosmos
  name: cosmosDatabaseName
  properties: {
    resource: {
      id: cosmosDatabaseName
    }
    options: cosmosDatabaseOptions
  }
}

resource cosmosSqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [
  for container in cosmosContainers: {
    parent: cosmosDatabase
    name: container.name
    properties: {
      resource: {
        id: container.name
        partitionKey: {
          paths: [
            container.partitionKey
          ]
          kind: 'Hash'
          version: 2
        }
        defaultTtl: container.defaultTtl
      }
    }
  }
]

resource cosmosRoleAssignment 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(cosmos.id, identity.id, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: identity.properties.principalId
    scope: cosmos.id
  }
}

// --- Key Vault ---------------------------------------------------------------------------------

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109: Flex Consumption cannot resolve Key Vault references to a network-restricted vault, even with VNet integration; the vault is RBAC-only, so reading a secret needs the Secrets User role.
  //checkov:skip=CKV_AZURE_189: Public network access stays on for the same reason as CKV_AZURE_109.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: keyVaultSoftDeleteDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Always written from the parameters, so the app settings' references never point at a missing
// secret (App Service would then hand the app the reference text itself as the value).
resource masterKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  //checkov:skip=CKV_AZURE_41: No expiry date: an admin key that stops on a date would lock administrators out; the master key is rotated on purpose by setting a new value.
  parent: keyVault
  name: masterKeySecretName
  properties: {
    value: masterKey
    contentType: 'text/plain'
  }
}

resource keyHashSecretResource 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  //checkov:skip=CKV_AZURE_41: The key-hashing secret must never expire or change on its own: every virtual key is stored under it.
  parent: keyVault
  name: keyHashSecretName
  properties: {
    value: keyHashSecret
    contentType: 'text/plain'
  }
}

// --- role assignments for the app's identity ----------------------------------------------------

// Storage: each role on one container or queue. Blob Data Contributor, not Owner: neither the host
// nor Cirrus sets ACLs or changes ownership (Owner's only additions, for Data Lake), and
// Contributor covers reading, writing and deleting blobs and leasing them.

// Cirrus's blobs: uploads, batch and job outputs.
resource appBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (name, i) in blobContainers: {
    scope: appContainers[i]
    name: guid(appContainers[i].id, identity.id, roles.storageBlobDataContributor)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// The host's leases (the sweeper's timer), host id and keys.
resource hostBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (name, i) in hostContainers: {
    scope: hostBlobContainers[i]
    name: guid(hostBlobContainers[i].id, identity.id, roles.storageBlobDataContributor)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// The app's own code package: read-only for the app, so nothing running as it can replace the code.
resource packageReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: packageContainer
  name: guid(packageContainer.id, identity.id, roles.storageBlobDataReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Publishing writes the package with the deployment identity, on this container only.
resource packageWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: packageContainer
  name: guid(packageContainer.id, deployIdentity.id, roles.storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The queues Cirrus sends to and the host's triggers read, poison queues included (the host moves
// a failed message there; the jobs and batch poison queues have triggers of their own).
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (name, i) in queues: {
    scope: appQueues[i]
    name: guid(appQueues[i].id, identity.id, roles.storageQueueDataContributor)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Reply queues (replyQueues): send only, so the app cannot read or delete what their owners have.
resource replyQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (name, i) in replyQueues: {
    scope: replyQueueResources[i]
    name: guid(replyQueueResources[i].id, identity.id, roles.storageQueueDataMessageSender)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: keyVault
  name: guid(keyVault.id, identity.id, roles.keyVaultSecretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  scope: keyVault
  name: guid(keyVault.id, principalId, roles.keyVaultSecretsOfficer)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: principalId
    principalType: principalType
  }
}

// Keyless Azure OpenAI (azureOpenAiAccountName): Cognitive Services OpenAI User on the existing
// account, assigned by a module deployed to the account's resource group (this one by default).
module azureOpenAiAccess 'modules/azure-openai-access.bicep' = if (!empty(azureOpenAiAccountName)) {
  name: 'cirrus-azure-openai-${resourceToken}'
  scope: resourceGroup(empty(azureOpenAiResourceGroup) ? resourceGroup().name : azureOpenAiResourceGroup)
  params: {
    accountName: azureOpenAiAccountName
    identityId: identity.id
    principalId: identity.properties.principalId
  }
}

// --- the Function App --------------------------------------------------------------------------

// Who may administer, checked by a module of its own (modules/identity-settings.bicep says why):
// the master key off without Entra ID admins is refused.
module identitySettings 'modules/identity-settings.bicep' = {
  name: 'cirrus-identity-${resourceToken}'
  params: {
    masterKeyEnabled: masterKeyEnabled
    entraIssuers: entraIssuers
    entraAudience: entraAudience
  }
}

// Every app setting Cirrus reads in Azure (shared/config.py Settings aliases), plus the host's own.
// Local-only settings (COSMOS_KEY, CIRRUS_LOCAL_PROVIDER_URL, an AzureWebJobsStorage connection
// string) never appear here; FUNCTIONS_WORKER_RUNTIME is functionAppConfig.runtime on Flex.
var appSettings = {
  CIRRUS_ENV: 'azure'
  CIRRUS_MASTER_KEY: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${masterKeySecretName}/)'
  CIRRUS_MASTER_KEY_ENABLED: identitySettings.outputs.masterKeyEnabled
  CIRRUS_ENTRA_ISSUERS: entraIssuers
  CIRRUS_ENTRA_AUDIENCE: identitySettings.outputs.entraAudience
  CIRRUS_KEY_HASH_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${keyHashSecretName}/)'
  CIRRUS_MODEL_CONFIG: modelConfig
  CIRRUS_MAX_BODY_BYTES: '8388608'
  CIRRUS_MAX_MESSAGES: '2048'
  CIRRUS_MAX_UPLOAD_BYTES: '209715200'
  CIRRUS_BATCH_CHUNK_SIZE: string(batchChunkSize)
  CIRRUS_BATCH_CONCURRENCY: string(batchConcurrency)
  CIRRUS_BATCH_WINDOW_SECONDS: '86400'
  CIRRUS_HTTP_ALLOWLIST: ''
  CIRRUS_HTTP_MAX_BYTES: '1000000'
  CIRRUS_HTTP_TIMEOUT_S: '10'
  CIRRUS_JOB_LEASE_SECONDS: '90'
  CIRRUS_RESPONSE_MAX_COST_USD: '1'
  CIRRUS_SWEEP_SCHEDULE: '0 */1 * * * *'
  CIRRUS_PROVIDER_MAX_CONNECTIONS: '256'
  CIRRUS_PROVIDER_KEEPALIVE_SECONDS: '30'
  CIRRUS_LOG_LEVEL: 'INFO'
  CIRRUS_LOG_FORMAT: 'text'
  CIRRUS_TRACE_CONTENT: 'false'
  CIRRUS_UPLOADS_CONTAINER: uploadsContainer
  CIRRUS_OUTPUTS_CONTAINER: outputsContainer
  COSMOS_ENDPOINT: cosmos.properties.documentEndpoint
  COSMOS_DATABASE: cosmosDatabaseName
  JOBS_QUEUE: jobsQueue
  BATCH_QUEUE: batchQueue
  USAGE_QUEUE: usageQueue
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AZURE_CLIENT_ID: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint
  CIRRUS_TELEMETRY_SAMPLING: telemetrySampling
  CIRRUS_APPINSIGHTS_LIVE_METRICS: 'true'
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  AzureFunctionsJobHost__extensions__queues__batchSize: string(queueBatchSize)
  PYTHON_ENABLE_INIT_INDEXING: '1'
  LITELLM_LOCAL_MODEL_COST_MAP: 'True'
}

// The site's CORS, checked by a module of its own (modules/cors.bicep says why).
module cors 'modules/cors.bicep' = {
  name: 'cirrus-cors-${resourceToken}'
  params: {
    allowedOrigins: corsAllowedOrigins
    supportCredentials: corsSupportCredentials
  }
}

// os.environ/NAME secrets of the model file: Key Vault references to secrets named like the setting
// in lower case with dashes (OPENAI_API_KEY -> openai-api-key). Built as JSON text: the lambda
// functions that would build the object (map, toObject) are beyond checkov's Bicep parser.
var providerKeyList = empty(trim(providerKeyNames)) ? [] : split(replace(providerKeyNames, ' ', ''), ',')
var providerKeyPairs = [
  for name in providerKeyList: '"${name}": "@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${toLower(replace(name, '_', '-'))}/)"'
]
var providerKeySettings = json('{${join(providerKeyPairs, ',')}}')

var functionAppTags = union(tags, {
  'azd-service-name': 'api'
})
// Instances kept running for the HTTP functions (the queue functions scale from zero on their own).
var alwaysReady = alwaysReadyInstances > 0 ? [
  {
    name: 'http'
    instanceCount: alwaysReadyInstances
  }
] : []

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225: Zone redundancy on Flex Consumption needs at least two always-ready instances per group, which would end scale-to-zero; alwaysReadyInstances and zoneRedundant can be raised together.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_16: Entra ID registration (EasyAuth) is not supported on Flex Consumption, and clients are OpenAI SDKs sending Bearer keys that Cirrus verifies itself.
  //checkov:skip=CKV_AZURE_17: Client certificates are not part of the OpenAI API; clients authenticate with Bearer keys over TLS 1.2+.
  //checkov:skip=CKV_AZURE_222: The gateway is a public API by design; put API Management or Front Door in front to restrict it.
  //checkov:skip=CKV_AZURE_212: Flex Consumption adds instances on demand; keep some warm with alwaysReadyInstances (0 by default, so the app scales to zero).
  //checkov:skip=CKV_AZURE_213: Flex Consumption replaces failing instances itself; Cirrus's readiness probe is GET /health/ready, for an Application Insights availability test.
  name: functionAppName
  location: location
  tags: functionAppTags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
      '${deployIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      cors: {
        allowedOrigins: cors.outputs.allowedOrigins
        supportCredentials: corsSupportCredentials
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: deployIdentity.id
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
    }
  }
  dependsOn: [
    appBlobContributor
    hostBlobContributor
    packageReader
    packageWriter
    queueContributor
    replyQueueSender
    secretsUser
    metricsPublisher
    cosmosRoleAssignment
    azureOpenAiAccess
    packageContainer
    appQueues
  ]
}

// checkov reads every Microsoft.Web/sites/config resource as the site's web configuration; this
// one is the app settings, so the site-configuration checks skipped in it do not apply (the site
// resource above passes or skips them with its own reasons).
resource functionAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13: Not the web configuration (see above); authentication is Cirrus's own key check.
  //checkov:skip=CKV_AZURE_63: Not the web configuration; Flex Consumption has no App Service HTTP logs, requests are traced to Application Insights.
  //checkov:skip=CKV_AZURE_65: Not the web configuration; Flex Consumption has no App Service detailed error pages, errors go to Application Insights.
  //checkov:skip=CKV_AZURE_66: Not the web configuration; Flex Consumption has no failed-request tracing files, failures are traced to Application Insights.
  //checkov:skip=CKV_AZURE_80: Not the web configuration, and the app is Python, not .NET.
  //checkov:skip=CKV_AZURE_88: Not the web configuration; Flex Consumption has no Azure Files content share.
  //checkov:skip=CKV_AZURE_222: Not the web configuration; the gateway is a public API by design (see the site).
  parent: functionApp
  name: 'appsettings'
  properties: union(appSettings, providerKeySettings, modelSettings)
  dependsOn: [
    masterKeySecret
    keyHashSecretResource
  ]
}

// Deployments use Entra ID (azd, Core Tools, the publish API): no FTP or SCM basic-auth passwords.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// --- outputs: named as the app settings they feed (azd writes them to .azure/<env>/.env) -------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.name
output AZURE_KEY_VAULT_NAME string = keyVault.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.properties.vaultUri
output SERVICE_API_NAME string = functionApp.name
output SERVICE_API_URI string = 'https://${functionApp.properties.defaultHostName}'
output AZURE_CLIENT_ID string = identity.properties.clientId
output COSMOS_ENDPOINT string = cosmos.properties.documentEndpoint
output COSMOS_DATABASE string = cosmosDatabaseName
output AzureWebJobsStorage__accountName string = storage.name
output AzureWebJobsStorage__blobServiceUri string = storage.properties.primaryEndpoints.blob
output AzureWebJobsStorage__queueServiceUri string = storage.properties.primaryEndpoints.queue
output CIRRUS_UPLOADS_CONTAINER string = uploadsContainer
output CIRRUS_OUTPUTS_CONTAINER string = outputsContainer
output JOBS_QUEUE string = jobsQueue
output BATCH_QUEUE string = batchQueue
output USAGE_QUEUE string = usageQueue
output CIRRUS_MODEL_CONFIG string = modelConfig
output APPLICATIONINSIGHTS_CONNECTION_STRING string = appInsights.properties.ConnectionString
// The keyless account's endpoint, for the model file's api_base (an output only: see modelSettings).
output AZURE_OPENAI_ENDPOINT string = empty(azureOpenAiAccountName) ? '' : azureOpenAiAccess!.outputs.endpoint
