-- Re-registers this pod's sessions after the registry lost them (Redis restart) or
-- turned them to grace while this pod was thought dead (its heartbeat stalled past
-- the TTL). Sessions that live on another pod now (they resumed there) or were
-- replaced are left alone and returned.
--
-- KEYS  per session, 3 each: its hash, its room's members, its room's roles
-- ARGV[1] this pod  [2] live-session TTL (s)  [3] grace period (s)
--     then per session, 6 each: session id, peer, role, "1" if live, seq, the last
--     order number delivered
-- Returns the ids of the sessions not restored.
local me, moved = ARGV[1], {}
for s = 1, #KEYS / 3 do
  local skey, members, roles = KEYS[s * 3 - 2], KEYS[s * 3 - 1], KEYS[s * 3]
  local a = 4 + (s - 1) * 6
  local sid, peer, role, live = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3] == '1'
  local cur = redis.call('HMGET', skey, 'sid', 'pod')
  if (cur[1] and cur[1] ~= sid) or (cur[2] and cur[2] ~= '' and cur[2] ~= me) then
    moved[#moved + 1] = sid
  else
    redis.call('HSET', skey, 'sid', sid, 'pod', me, 'role', role,
      'state', live and 'live' or 'grace', 'seq', ARGV[a + 4])
    -- numbering goes on from what the registry still has, else from the last delivered
    redis.call('HSETNX', skey, 'n', ARGV[a + 5])
    redis.call('EXPIRE', skey, live and ARGV[2] or ARGV[3])
    redis.call('HSETNX', members, peer, sid)
    redis.call('HSETNX', roles, peer, role)
  end
end
return moved
