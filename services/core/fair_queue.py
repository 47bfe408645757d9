"""Fair queuing of model work: which queued job a worker runs next.

Every queued job of a model waits in Redis, in a list per (band, tenant). A worker that is
free asks for the next unit of work (`FairQueue.pick`): the highest non-empty band (see
`services.core.bands`), and in it the tenant that has been served the fewest tokens so far,
divided by its weight: the Virtual Token Counter of Sheng et al., "Fairness in Serving Large
Language Models" (OSDI 2024). A pick charges the job's estimated cost (prompt plus
`max_tokens`); once the job ran, `settle` corrects the charge to the tokens really served.
A tenant that comes back after being idle starts at the band's current virtual time, not at
its old low count: fairness is about backlogged tenants, not a credit for time away.

The decision is made when a worker is free, not when a job is sent, so a quiet tenant's job
waits for about one model call however long another tenant's backlog is. All state is in
Redis and every operation is one Lua script, so any number of API processes and workers
share it. The database stays the source of truth: a job's entry here is only a hint, and the
maintenance pass puts back any queued job whose entry is gone (see `missing`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from services.core.bands import Band

WEIGHTS_KEY = "vlmq:tenant-weights"
KEY_PREFIX = "vlmq:fq:"
# Tokens served per second are kept this long (the throughput estimate reads them).
SERVED_WINDOW_S = 30

# Append jobs to their tenants' lists; a job already queued is left as it is. A tenant that
# becomes backlogged starts at max(its own count, the band's virtual time). The jobs queued
# are announced on the queue's arrivals channel, once per call, as "<jobs> <1 if any is
# interactive (bands up to DEFAULT), else 0>": idle workers wait there for work, and a
# saturated worker for a newcomer, instead of polling.
PUSH = """
local p = ARGV[1]
local pushed, interactive = 0, 0
local i = 2
while i <= #ARGV do
  local job, tenant, band, cost, alone = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  i = i + 5
  if redis.call('HSETNX', p..'cost', job, cost) == 1 then
    local b = p..'band:'..band
    if not redis.call('ZSCORE', b..':tenants', tenant) then
      local own = tonumber(redis.call('HGET', b..':vt', tenant) or '0')
      local now = tonumber(redis.call('GET', b..':floor') or '0')
      redis.call('ZADD', b..':tenants', math.max(own, now), tenant)
    end
    redis.call('RPUSH', b..':q:'..tenant, job)
    redis.call('HSET', p..'where', job, band..' '..tenant)
    if alone == '1' then redis.call('SADD', p..'alone', job) end
    redis.call('HINCRBY', p..'tenant_tokens', tenant, cost)
    redis.call('INCRBY', p..'queued_tokens', cost)
    pushed = pushed + 1
    if tonumber(band) <= INTERACTIVE_LAST_BAND then interactive = 1 end
  end
end
if pushed > 0 then redis.call('PUBLISH', p..'arrivals', pushed..' '..interactive) end
return pushed
""".replace("INTERACTIVE_LAST_BAND", str(int(Band.DEFAULT)))

# Take the next unit: one job, or up to a chunk of one tenant's batch lines (a line marked
# `alone` goes by itself). Returns {band, tenant, job1, cost1, job2, cost2, ...} or nil.
# Priority work first; then batch lines whenever their credit is not negative (every token
# served to default or flex work earns them share/(1-share) tokens); then default, flex.
# Bands after `last_band` and the tenants listed after it are passed over.
PICK = """
local p, allow_batch, chunk = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local share, lease, weights = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local last_band, excluded = tonumber(ARGV[7]), {}
for i = 8, #ARGV do excluded[ARGV[i]] = true end
local excluding = next(excluded) ~= nil
local function first_tenant(band)
  -- Without exclusions, only the lowest count is read: a pick costs the same for any
  -- number of backlogged tenants.
  local last = -1
  if not excluding then last = 0 end
  local all = redis.call('ZRANGE', p..'band:'..band..':tenants', 0, last, 'WITHSCORES')
  for i = 1, #all, 2 do
    if not excluded[all[i]] then return all[i], tonumber(all[i + 1]) end
  end
  return nil
end
local function waiting(band)
  if band > last_band then return false end
  if not excluding then return redis.call('ZCARD', p..'band:'..band..':tenants') > 0 end
  return first_tenant(band) ~= nil
end
local batch_waiting = waiting(3)
local credit = tonumber(redis.call('GET', p..'batch_credit') or '0')
local band = nil
if waiting(0) then band = 0 end
if band == nil and allow_batch and batch_waiting and credit >= 0 then band = 3 end
if band == nil then
  for b = 1, 2 do if waiting(b) then band = b break end end
end
if band == nil and allow_batch and batch_waiting then band = 3 end
if band == nil then return nil end
local b = p..'band:'..band
local tenant, counted = first_tenant(band)
local q = b..':q:'..tenant
local limit = 1
if band == 3 then limit = chunk end
local out = {band, tenant}
local cost, taken = 0, 0
while taken < limit do
  local job = redis.call('LINDEX', q, 0)
  if not job then break end
  local alone = redis.call('SISMEMBER', p..'alone', job) == 1
  if alone and taken > 0 then break end
  redis.call('LPOP', q)
  local job_cost = tonumber(redis.call('HGET', p..'cost', job) or '0')
  redis.call('HDEL', p..'cost', job)
  redis.call('HDEL', p..'where', job)
  redis.call('SREM', p..'alone', job)
  redis.call('SET', p..'picked:'..job, '1', 'EX', lease)
  cost = cost + job_cost
  taken = taken + 1
  out[#out + 1] = job
  out[#out + 1] = tostring(job_cost)
  if alone then break end
end
local weight = tonumber(redis.call('HGET', weights, tenant) or '1')
if weight == nil or weight <= 0 then weight = 1 end
local after = counted + cost / weight
redis.call('SET', b..':floor', tostring(counted))
redis.call('HSET', b..':vt', tenant, tostring(after))
if redis.call('LLEN', q) > 0 then
  redis.call('ZADD', b..':tenants', after, tenant)
else
  redis.call('ZREM', b..':tenants', tenant)
end
redis.call('HINCRBY', p..'tenant_tokens', tenant, -cost)
redis.call('INCRBY', p..'queued_tokens', -cost)
if band == 3 then
  redis.call('SET', p..'batch_credit', tostring(credit - cost))
elseif batch_waiting then
  redis.call('SET', p..'batch_credit', tostring(math.min(0, credit + cost * share / (1 - share))))
else
  redis.call('SET', p..'batch_credit', '0')
end
return out
"""

# Correct a tenant's count by `delta` tokens (its weight applied); count tokens served.
SETTLE = """
local p, weights, now = ARGV[1], ARGV[2], ARGV[3]
local i = 4
while i <= #ARGV do
  local band, tenant, delta, served = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), ARGV[i+3]
  i = i + 4
  local b = p..'band:'..band
  local weight = tonumber(redis.call('HGET', weights, tenant) or '1')
  if weight == nil or weight <= 0 then weight = 1 end
  if delta ~= 0 then
    redis.call('HINCRBYFLOAT', b..':vt', tenant, delta / weight)
    if redis.call('ZSCORE', b..':tenants', tenant) then
      redis.call('ZINCRBY', b..':tenants', delta / weight, tenant)
    end
  end
  if tonumber(served) > 0 then
    redis.call('INCRBY', p..'served:'..now, served)
    redis.call('EXPIRE', p..'served:'..now, 120)
  end
end
return 0
"""

# Take a job out of the queue (canceled or expired while it waited).
REMOVE = """
local p, job = ARGV[1], ARGV[2]
local where = redis.call('HGET', p..'where', job)
if not where then return 0 end
local band, tenant = string.match(where, '^(%S+) (.+)$')
local b = p..'band:'..band
local cost = tonumber(redis.call('HGET', p..'cost', job) or '0')
redis.call('LREM', b..':q:'..tenant, 1, job)
redis.call('HDEL', p..'cost', job)
redis.call('HDEL', p..'where', job)
redis.call('SREM', p..'alone', job)
redis.call('HINCRBY', p..'tenant_tokens', tenant, -cost)
redis.call('INCRBY', p..'queued_tokens', -cost)
if redis.call('LLEN', b..':q:'..tenant) == 0 then redis.call('ZREM', b..':tenants', tenant) end
return 1
"""

# About how many units of work run before this job: every job of a higher band, its own
# tenant's jobs ahead of it, and as many of each other tenant's jobs of its band (one more
# from a tenant served less so far: the fair order alternates tenants). Nil when the job is
# not waiting here.
POSITION = """
local p, job = ARGV[1], ARGV[2]
local where = redis.call('HGET', p..'where', job)
if not where then return nil end
local band, tenant = string.match(where, '^(%S+) (.+)$')
local b = p..'band:'..band
local own = redis.call('LPOS', b..':q:'..tenant, job)
if not own then return nil end
local ahead = own
for higher = 0, tonumber(band) - 1 do
  local hb = p..'band:'..higher
  for _, other in ipairs(redis.call('ZRANGE', hb..':tenants', 0, -1)) do
    ahead = ahead + redis.call('LLEN', hb..':q:'..other)
  end
end
local mine = tonumber(redis.call('ZSCORE', b..':tenants', tenant) or '0')
local others = redis.call('ZRANGE', b..':tenants', 0, -1, 'WITHSCORES')
for i = 1, #others, 2 do
  local other = others[i]
  if other ~= tenant then
    local turns = own
    if tonumber(others[i + 1]) < mine then turns = own + 1 end
    ahead = ahead + math.min(redis.call('LLEN', b..':q:'..other), turns)
  end
end
return ahead
"""

# How many units of work wait (a batch tenant's lines count a chunk at a time).
UNITS = """
local p, chunk = ARGV[1], tonumber(ARGV[2])
local units = 0
for band = 0, 3 do
  local b = p..'band:'..band
  for _, tenant in ipairs(redis.call('ZRANGE', b..':tenants', 0, -1)) do
    local n = redis.call('LLEN', b..':q:'..tenant)
    if band == 3 then units = units + math.ceil(n / chunk) else units = units + n end
  end
end
return units
"""


@dataclass(frozen=True)
class QueuedWork:
    """A job as the fair queue keeps it."""

    job_id: str
    tenant_id: str
    band: Band
    # Its estimated tokens (prompt plus `max_tokens`), charged when it is picked.
    cost: int
    # A batch line that goes in a chunk of its own (it lost a worker once already).
    alone: bool = False


@dataclass(frozen=True)
class Picked:
    """A unit of work a worker took: one job, or a chunk of one tenant's batch lines."""

    band: Band
    tenant_id: str
    # Job id -> the tokens charged for it.
    costs: dict[str, int]

    @property
    def job_ids(self) -> list[str]:
        """The jobs, in queue order."""
        return list(self.costs)

    def refunds(self) -> list[Settlement]:
        """The settlements that give back the unit's whole charge (it did not run)."""
        return [Settlement(self.band, self.tenant_id, cost, 0) for cost in self.costs.values()]


@dataclass(frozen=True)
class Settlement:
    """A picked job's charge corrected to what it really cost."""

    band: int
    tenant_id: str
    charged: int
    served: int


@dataclass(frozen=True)
class Load:
    """A model's queued work and recent throughput, as admission control reads it."""

    queued_tokens: int
    backlogged_tenants: int
    # Tokens served per second over the last `SERVED_WINDOW_S` (0: none served).
    tokens_per_s: float

    @property
    def wait_s(self) -> float | None:
        """About how long new work waits (None: no recent service to estimate from)."""
        if self.tokens_per_s <= 0:
            return None
        return self.queued_tokens / self.tokens_per_s

    @property
    def fair_share_tokens(self) -> float:
        """An equal share of the queued tokens."""
        return self.queued_tokens / max(1, self.backlogged_tenants)


class FairQueue:
    """The queued work of one model queue (all state in Redis)."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.redis = client
        self.prefix = f"{KEY_PREFIX}{queue}:"
        self._push = client.register_script(PUSH)
        self._pick = client.register_script(PICK)
        self._settle = client.register_script(SETTLE)
        self._remove = client.register_script(REMOVE)
        self._position = client.register_script(POSITION)
        self._units = client.register_script(UNITS)

    def push(self, work: list[QueuedWork]) -> None:
        """Queue jobs (a job already queued stays where it is)."""
        if not work:
            return
        args: list[Any] = [self.prefix]
        for item in work:
            args += [item.job_id, item.tenant_id, int(item.band), item.cost, int(item.alone)]
        self._push(args=args)

    def pick(
        self,
        *,
        allow_batch: bool,
        chunk: int,
        batch_share: float,
        hold_s: int,
        last_band: Band = Band.BATCH,
        excluded: frozenset[str] = frozenset(),
    ) -> Picked | None:
        """Take the next unit of work, charging its tenant; None when nothing waits.

        `allow_batch`: a chunk of batch lines may be taken. Each job taken is marked as held
        for `hold_s` (a worker that dies before its claim leaves it to the maintenance pass).
        Work of bands after `last_band`, and of the `excluded` tenants, is left waiting.
        """
        share = min(max(batch_share, 0.0), 0.9)
        args: list[Any] = [self.prefix, int(allow_batch), max(1, chunk), share, max(1, hold_s)]
        reply = self._pick(args=[*args, WEIGHTS_KEY, int(last_band), *sorted(excluded)])
        if not reply:
            return None
        band, tenant, *pairs = reply
        costs = {_text(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        if not costs:
            return None
        return Picked(Band(int(band)), _text(tenant), costs)

    def settle(
        self, settlements: list[Settlement], pipeline: redis.client.Pipeline | None = None
    ) -> None:
        """Correct picked jobs' charges to the tokens they really cost (0 for a job that
        never ran), and count the tokens served; in `pipeline`, if given (sent with it)."""
        if not settlements:
            return
        args: list[Any] = [self.prefix, WEIGHTS_KEY, int(time.time())]
        for item in settlements:
            args += [int(item.band), item.tenant_id, item.served - item.charged, item.served]
        if pipeline is None:
            self._settle(args=args)
        else:
            # EVAL, not a registered script: a pipeline would first ask whether the script
            # is loaded, a round trip of its own. Redis caches the compiled script all the
            # same.
            pipeline.eval(SETTLE, 0, *args)

    def remove(self, job_id: str) -> bool:
        """Take a job out of the queue; False when it was not there."""
        return bool(self._remove(args=[self.prefix, job_id]))

    def position(self, job_id: str) -> int | None:
        """About how many units of work run before this job; None when it is not queued."""
        found = self._position(args=[self.prefix, job_id])
        return None if found is None else int(found)

    def units(self, chunk: int) -> int:
        """How many units of work wait."""
        return int(self._units(args=[self.prefix, max(1, chunk)]))

    def drop_held(self, job_ids: list[str]) -> None:
        """Forget that these jobs are held: their worker claimed them, or could not."""
        if job_ids:
            self.redis.delete(*(self.held_key(job_id) for job_id in job_ids))

    @property
    def arrivals_channel(self) -> str:
        """The channel where work is announced as it is queued (see `PUSH`)."""
        return f"{self.prefix}arrivals"

    def held_key(self, job_id: str) -> str:
        """The key that says a worker took the job and has not claimed it yet."""
        return f"{self.prefix}picked:{job_id}"

    def missing(self, job_ids: list[str]) -> list[str]:
        """Those of `job_ids` that neither wait here nor are held by a worker."""
        if not job_ids:
            return []
        pipeline = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipeline.hexists(self.prefix + "cost", job_id)
            pipeline.exists(self.held_key(job_id))
        found = pipeline.execute()
        return [
            job_id
            for index, job_id in enumerate(job_ids)
            if not found[2 * index] and not found[2 * index + 1]
        ]

    def load(self) -> Load:
        """The model's queued tokens, its backlogged tenants and its recent throughput."""
        now = int(time.time())
        pipeline = self.redis.pipeline(transaction=False)
        pipeline.get(self.prefix + "queued_tokens")
        for band in Band:
            pipeline.zcard(f"{self.prefix}band:{int(band)}:tenants")
        # The current second is still filling up: the window ends before it.
        for second in range(now - SERVED_WINDOW_S, now):
            pipeline.get(f"{self.prefix}served:{second}")
        found = pipeline.execute()
        bands = len(Band)
        return Load(
            queued_tokens=max(0, int(found[0] or 0)),
            backlogged_tenants=sum(int(count) for count in found[1 : 1 + bands]),
            tokens_per_s=sum(int(value or 0) for value in found[1 + bands :]) / SERVED_WINDOW_S,
        )

    def queued_tokens_of(self, tenant_id: str) -> int:
        """The tokens of the tenant's queued jobs."""
        found = cast(bytes | None, self.redis.hget(self.prefix + "tenant_tokens", tenant_id))
        return max(0, int(found or 0))

    def tenant_tokens(self) -> dict[str, int]:
        """Each tenant's queued tokens, for every tenant that has had work queued here."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.prefix + "tenant_tokens"))
        return {_text(key): max(0, int(value)) for key, value in raw.items()}


def set_weights(client: redis.Redis, weights: dict[str, float]) -> None:
    """Make the scheduler read these tenant weights (1 for every tenant not named)."""
    pipeline = client.pipeline(transaction=True)
    pipeline.delete(WEIGHTS_KEY)
    if weights:
        pipeline.hset(WEIGHTS_KEY, mapping={key: str(value) for key, value in weights.items()})
    pipeline.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
