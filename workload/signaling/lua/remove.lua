-- A session ends (leave, or its grace period ran out on this pod).
--
-- KEYS[1..4]  the session: hash, box, routed, recent
-- KEYS[5]     the room's members     KEYS[6] its roles     KEYS[7] its meta
-- KEYS[8]     its event stream
-- ARGV[1] session id  [2] peer  [3] this pod  [4] how long an empty room's history and
--     meta stay (s)
-- Returns 0 when another pod owns the session now (nothing changed); 1 when this call
--         took the peer out of the room (the caller tells the room); 2 when the peer
--         was out already (someone else told the room).
local s = redis.call('HMGET', KEYS[1], 'sid', 'pod')
if s[1] == ARGV[1] then
  if s[2] and s[2] ~= '' and s[2] ~= ARGV[3] then return 0 end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
end
if redis.call('HGET', KEYS[5], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[5], ARGV[2])
  redis.call('HDEL', KEYS[6], ARGV[2])
  if redis.call('EXISTS', KEYS[5]) == 0 then  -- the last one: the room is empty
    redis.call('EXPIRE', KEYS[7], ARGV[4])
    redis.call('EXPIRE', KEYS[8], ARGV[4])
  end
  return 1
end
return 2
