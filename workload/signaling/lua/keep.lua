-- include: route_lib
-- A frame for one session that this pod does not attach: forwarded if the session is
-- live on a listening pod, else kept for its resume.
--
-- KEYS[1..3]  the session: hash, box, routed
-- ARGV[1] session id  [2] frame  [3] this pod  [4] frames kept per session at most
--     [5] how long kept and routed frames are held (s)  [6] now  [7] the frame's order
--     number n, or '' for a new one  [8] room  [9] peer  [10] inbox channel prefix
-- Returns 0 when the session is gone or was replaced (the frame is dropped), 1 when
--         published to its pod, 2 when kept, 3 when it is live on this very pod (a
--         resume raced the frame: the caller delivers it).
local s = redis.call('HMGET', KEYS[1], 'sid', 'pod', 'state')
if s[1] ~= ARGV[1] then return 0 end
if s[3] == 'live' and s[2] == ARGV[3] then return 3 end
local keep_max, hold = tonumber(ARGV[4]), ARGV[5]
local n = next_n(KEYS[1], ARGV[7])
if s[3] == 'live' and s[2] ~= '' then
  local msg = 'b\31' .. ARGV[6] .. '\30' .. ARGV[8] .. '\31' .. ARGV[9] .. '\31' .. ARGV[1]
    .. '\31' .. n .. '\31' .. ARGV[2]
  if redis.call('PUBLISH', ARGV[10] .. s[2], msg) > 0 then
    routed(KEYS[3], n, ARGV[2], hold)
    return 1
  end
end
keep(KEYS[1], KEYS[2], ARGV[2], keep_max, hold, n)
return 2
