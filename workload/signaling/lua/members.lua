-- The room's members (until the room heard they left) and their roles.
--
-- KEYS[1] the room's members  KEYS[2] its roles
-- Returns {peer, role, ...}.
local out = {}
for _, p in ipairs(redis.call('HKEYS', KEYS[1])) do
  out[#out + 1] = p
  out[#out + 1] = redis.call('HGET', KEYS[2], p) or 'participant'
end
return out
