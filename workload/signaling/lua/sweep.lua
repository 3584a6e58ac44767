-- Ends, once, the membership of peers whose sessions expired (a pod died and nobody
-- resumed, or a grace period ended where no pod was watching): each is returned to
-- exactly one caller, which tells the room; what was kept for them is freed.
--
-- KEYS[1] the room's members  [2] its roles  [3] its meta  [4] its event stream
--     then per member to check, 4 each: its session's hash, box, routed, recent
-- ARGV[1] how long an empty room's history and meta stay (s)
--     then per member to check, 2 each: peer, the session id the caller read for it
-- Returns {peer, role, ...} of the members this call removed.
local gone = {}
for i = 2, #ARGV, 2 do
  local k = 4 + (i - 2) * 2
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
if #gone > 0 and redis.call('EXISTS', KEYS[1]) == 0 then  -- the room is empty now
  redis.call('EXPIRE', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[1])
end
return gone
