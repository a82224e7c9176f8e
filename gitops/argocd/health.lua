-- Argo CD health check for modelplane.io/ModelDeployment.
-- Install: see gitops/argocd/README.md (argocd-cm resource.customizations.health).
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then return nil end
  for _, c in ipairs(conditions) do
    if c.type == type_ then return c end
  end
  return nil
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelplane operator"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local stalled = condition(conditions, "Stalled")
local degraded = condition(conditions, "Degraded")

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (ready and ready.message) or degraded.message or "The target revision failed"
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or "The rollout cannot make progress"
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
if ready ~= nil and (ready.reason == "RolloutPaused" or ready.reason == "CanaryPaused") then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end
hs.status = "Progressing"
hs.message = (ready and ready.message) or "Rolling out"
return hs
