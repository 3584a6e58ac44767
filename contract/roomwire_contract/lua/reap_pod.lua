-- Turns a dead pod's sessions into grace, exactly once, whoever notices first: a
-- surviving pod (the pod's heartbeat hash expired) or the operator (it saw the pod gone
-- in the Kubernetes API). Each live session of the pod goes to grace with no pod, so it
-- can resume at any pod and frames for it are kept in its box meanwhile; its grace
-- period counts from the pod's last heartbeat. Then the pod's heartbeat, its entry in
-- the pod set and its session set go, so a second caller finds nothing to do.
--
-- KEYS[1]  rw:pod:{pod}           the pod's heartbeat hash (expires with its TTL)
-- KEYS[2]  rw:pods                sorted set: pod -> unix time of its last heartbeat
-- KEYS[3]  rw:pod:{pod}:sessions  the pod's session ids
-- ARGV[1]  pod id
-- ARGV[2]  grace period, seconds
-- ARGV[3]  now, unix seconds (the caller's clock)
-- ARGV[4]  "1": the caller knows the pod is dead (operator); "0": dead only if its
--          heartbeat hash expired (a pod's own check)
-- Returns  the number of sessions turned to grace, or -1 when the pod is alive or was
--          handled already (nothing was changed).
local pod, grace, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local known = ARGV[4] == '1'
local last = redis.call('ZSCORE', KEYS[2], pod)
if not known then
  if not last or redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
end
last = tonumber(last or now)
-- what is left of the grace period that started at the last heartbeat
local left = math.max(1, math.floor(last + grace - now))
local n = 0
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local skey = 'rw:session:' .. sid
  local s = redis.call('HMGET', skey, 'pod', 'state')
  if s[1] == pod then
    if s[2] == 'live' then
      redis.call('HSET', skey, 'state', 'grace', 'pod', '')
      redis.call('EXPIRE', skey, left)
      for _, k in ipairs({skey .. ':box', skey .. ':routed', skey .. ':recent'}) do
        if redis.call('EXISTS', k) == 1 then redis.call('EXPIRE', k, left) end
      end
      n = n + 1
    else
      -- already in grace (detached before the pod died): its own period goes on
      redis.call('HSET', skey, 'pod', '')
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], pod)
return n
