-- Turns a dead pod's sessions of one room to grace with no pod, so each can resume at
-- any pod and frames for it are kept meanwhile; sessions that moved on (resumed
-- elsewhere, replaced) are left alone. Idempotent.
--
-- KEYS     per session, 4 each: its hash, box, routed list, recent list
--          (roomwire_contract.keys.session_keys), all of one room
-- ARGV[1]  the dead pod's id
-- ARGV[2]  seconds left of the grace period, which started at the pod's last heartbeat
-- Returns  the number of live sessions turned to grace.
local pod, left, n = ARGV[1], ARGV[2], 0
for i = 1, #KEYS, 4 do
  local s = redis.call('HMGET', KEYS[i], 'pod', 'state')
  if s[1] == pod then
    if s[2] == 'live' then
      redis.call('HSET', KEYS[i], 'state', 'grace', 'pod', '')
      for j = i, i + 3 do
        if redis.call('EXISTS', KEYS[j]) == 1 then redis.call('EXPIRE', KEYS[j], left) end
      end
      n = n + 1
    else
      -- already in grace (detached before the pod died): its own period goes on
      redis.call('HSET', KEYS[i], 'pod', '')
    end
  end
end
return n
