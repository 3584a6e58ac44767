-- A new session of a peer in a room; it replaces the peer's previous session, if any.
--
-- KEYS[1]     the room's members     KEYS[2] its roles     KEYS[3] its meta
-- KEYS[4..7]  the peer's session: hash, box, routed, recent (keys.session_keys)
-- ARGV[1] session id  [2] peer  [3] role  [4] this pod  [5] peers per room at most
--     [6] live-session TTL (s)  [7] an epoch, if the room is new  [8] room TTL (s)
-- Returns {-1} when the room is full; else {number of other members, replaced session
--         id or '', its pod or '', epoch, offset, {peer, role, ...} of the others}.
local members, roles, meta, skey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sid, peer, role, pod = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local peers, count = {}, 0
for _, p in ipairs(redis.call('HKEYS', members)) do
  if p ~= peer then
    count = count + 1
    table.insert(peers, p)
    table.insert(peers, redis.call('HGET', roles, p) or 'participant')
  end
end
local old = redis.call('HMGET', skey, 'sid', 'pod')
local old_sid, old_pod = old[1] or '', old[2] or ''
if old_sid == '' and count >= tonumber(ARGV[5]) then return {-1} end
redis.call('DEL', skey, KEYS[5], KEYS[6], KEYS[7])
redis.call('HSET', members, peer, sid)
redis.call('HSET', roles, peer, role)
redis.call('EXPIRE', roles, ARGV[8])
redis.call('HSET', skey, 'sid', sid, 'pod', pod, 'role', role, 'state', 'live', 'seq', 0, 'n', 0)
redis.call('EXPIRE', skey, ARGV[6])
redis.call('HSETNX', meta, 'epoch', ARGV[7])
redis.call('EXPIRE', meta, ARGV[8])
local epoch = redis.call('HGET', meta, 'epoch')
local offset = tonumber(redis.call('HGET', meta, 'offset') or '0')
return {count, old_sid, old_pod, epoch, offset, peers}
