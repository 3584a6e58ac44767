-- Attaches a session to this pod and hands over what was kept for it.
--
-- KEYS[1..4]  the session: hash, box, routed, recent     KEYS[5] the room's members
-- ARGV[1] session id  [2] this pod  [3] live-session TTL (s)  [4] peer
--     [5] the client's last_rn, or -1 (then frames routed to its old pod are not needed)
--     [6] this attempt's id  [7] now (ms, the pod's clock)  [8] how long an attempt
--     holds the session against other resumes (ms), unless it says it is done first
-- Returns false when the session is gone or was replaced; 0 when another resume of it
--         is under way (on any pod: one winner); else {old pod or '', seq, frames
--         dropped by the grace bound, box entries, recent frames, routed frames}.
local skey = KEYS[1]
local s = redis.call('HMGET', skey, 'sid', 'pod', 'seq', 'dropped', 'resuming')
if s[1] ~= ARGV[1] then return false end
if s[5] then
  local bar = string.find(s[5], '|', 1, true)
  if bar and string.sub(s[5], 1, bar - 1) ~= ARGV[6]
      and tonumber(string.sub(s[5], bar + 1)) > tonumber(ARGV[7]) then
    return 0
  end
end
redis.call('HSET', skey, 'pod', ARGV[2], 'state', 'live', 'dropped', 0,
  'resuming', ARGV[6] .. '|' .. (tonumber(ARGV[7]) + tonumber(ARGV[8])))
redis.call('EXPIRE', skey, ARGV[3])
redis.call('HSET', KEYS[5], ARGV[4], ARGV[1])
local entries = redis.call('XRANGE', KEYS[2], '-', '+')
local recent = redis.call('LRANGE', KEYS[4], 0, -1)
local routed = {}
if tonumber(ARGV[5]) >= 0 then routed = redis.call('LRANGE', KEYS[3], 0, -1) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {s[2] or '', s[3] or '0', s[4] or '0', entries, recent, routed}
