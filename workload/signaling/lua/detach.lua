-- The session's connection is gone: the session waits for its grace period.
--
-- KEYS[1] the session's hash  KEYS[2] its recent list
-- ARGV[1] session id  [2] this pod  [3] seq (the last delivered)  [4] grace period (s)
--     then the last frames sent on the lost connection, as "<seq>:<frame>"
-- Returns 1, or 0 when the session is not this pod's any more (nothing changed).
local s = redis.call('HMGET', KEYS[1], 'sid', 'pod')
if s[1] ~= ARGV[1] or s[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'grace', 'seq', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
if #ARGV > 4 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 5))
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
