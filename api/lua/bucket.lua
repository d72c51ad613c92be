-- A token bucket per API key (api.limits.RateLimiter): KEYS[1] its hash {tokens, ts}.
-- ARGV[1] tokens added per second, ARGV[2] the bucket's size (the burst).
-- Returns {1, 0} when a token was taken, {0, ms until one is there} otherwise.
-- The server's clock, so every gateway process shares one bucket per key.
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(now - ts, 0) * rate / 1000)
local taken, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {taken, wait}
