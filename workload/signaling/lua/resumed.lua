-- A resume attempt is over (its `joined` sent, or it failed): other resumes of the
-- session may take it over again (see resume.lua).
--
-- KEYS[1] the session's hash
-- ARGV[1] the attempt's id
-- Returns 1 if the attempt still held the session, else 0.
local held = redis.call('HGET', KEYS[1], 'resuming')
if held and string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('HDEL', KEYS[1], 'resuming')
  return 1
end
return 0
