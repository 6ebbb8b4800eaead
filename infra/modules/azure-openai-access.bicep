// Keyless Azure OpenAI: the app's identity gets Cognitive Services OpenAI User on an existing
// Azure OpenAI or Azure AI Services account, so `azure/` deployments in the model file need no
// api_key. A module because a role assignment is deployed in its scope's resource group and the
// account may be in another one of the subscription; main.bicep calls it only when
// azureOpenAiAccountName is set, scoped to the account's resource group.

targetScope = 'resourceGroup'

@description('Name of the existing Microsoft.CognitiveServices/accounts account (kind OpenAI or AIServices) in this resource group.')
param accountName string

@description('Resource id of the app\'s user-assigned identity (seeds the role assignment\'s name).')
param identityId string

@description('Principal (object) id of that identity.')
param principalId string

// Cognitive Services OpenAI User: inference (chat, completions, embeddings, images, audio) with an
// Entra ID token; no keys, no deployment or account management.
var cognitiveServicesOpenAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2023-05-01' existing = {
  name: accountName
}

resource openAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, identityId, cognitiveServicesOpenAiUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The account's Azure OpenAI endpoint: its custom subdomain (which Entra ID sign-in requires; the
// account's name unless it was created with another) under openai.azure.com.
output endpoint string = 'https://${account.properties.customSubDomainName}.openai.azure.com'
