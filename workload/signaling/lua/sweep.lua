-- Ends, once, the membership of peers whose sessions expired (a pod died and nobody
-- resumed, or a grace period ended where no pod was watching): each is returned to
-- exactly one caller, which tells the room; what was kept for them is freed.
--
-- KEYS[1] the room's members  [2] its roles
--     then per member to check, 4 each: its session's hash, box, routed, recent
-- ARGV  per member to check, 2 each: peer, the session id the caller read for it
-- Returns {peer, role, ...} of the members this call removed.
local gone = {}
for i = 1, #ARGV, 2 do
  local k = 2 + (i - 1) * 2
  local peer = ARGV[i]
  -- HDEL decides which sweeping pod announces it: only one removes it
  if redis.call('EXISTS', KEYS[k + 1]) == 0 and redis.call('HGET', KEYS[1], peer) == ARGV[i + 1]
      and redis.call('HDEL', KEYS[1], peer) == 1 then
    gone[#gone + 1] = peer
    gone[#gone + 1] = redis.call('HGET', KEYS[2], peer) or 'participant'
    redis.call('HDEL', KEYS[2], peer)
    -- its grace period is over: what was kept for it is freed now, not at its TTL
    redis.call('DEL', KEYS[k + 2], KEYS[k + 3], KEYS[k + 4])
  end
end
return gone
