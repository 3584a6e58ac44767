-- Claims a dead pod's sessions, exactly once, whoever notices first: a surviving pod
-- (the pod's heartbeat hash expired) or the operator (it saw the pod gone in the
-- Kubernetes API). The claimer then turns them to grace room by room
-- (grace_sessions.lua) and removes the pod from rw:pods; a later caller finds nothing
-- left to claim.
--
-- KEYS[1]  rw:pod:{<pod>}           the pod's heartbeat hash (expires with its TTL)
-- KEYS[2]  rw:pod:{<pod>}:sessions  the pod's sessions, as "<room> US <peer>"
-- ARGV[1]  "1": the caller knows the pod is dead (operator); "0": dead only if its
--          heartbeat hash expired (a pod's own check)
-- Returns  {0} when the pod is alive; {1} when it is dead with nothing left to claim
--          (no sessions, or claimed already); {2, {member, ...}} when this call
--          claimed its sessions.
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
redis.call('DEL', KEYS[1])
local members = redis.call('SMEMBERS', KEYS[2])
if #members == 0 then return {1} end
redis.call('DEL', KEYS[2])
return {2, members}
