"""The Redis backend: the holders of a capacity in a Redis (or Valkey) sorted set, across hosts.

Everything that decides happens in one Lua script (registered once with redis-py's
``register_script``, so it runs by hash), atomically on the server, timed by the server's
``TIME`` (never a client's clock).  Its keys share the hash tag ``{appd:capacity:<name>}``, so
they land in one slot of a Redis Cluster:

- ``…:holders`` — sorted set, member = holder id, score = expiry in server milliseconds;
- ``…:waiters`` — sorted set of the acquirers waiting, scored likewise (for ``appd status``);
- ``…:token`` — the fencing counter, and ``…:tokens`` each holder's token (for status);
- ``…:wake`` — a list: a release pushes one element, and one waiter blocked in ``BLPOP`` on it
  wakes (so a release never wakes a stampede).  A waiter also retries on its own after a
  jittered pause, which covers holders that died without releasing (their entries expire).

Operations (the script's first argument):

``acquire``
    drop expired holders and waiters; admit the holder when fewer than ``limit`` hold (score =
    now + ttl) and hand it the next fencing token; otherwise record it as a waiter.
``renew``
    extend a holder that is still there (``ZADD XX``); 0 when it is gone: the lease is lost.
``release``
    remove the holder and push one wake-up.
``status``
    the holders with their tokens' and expiries, and the number of waiters.

The fencing token is ``max(counter + 1, server time in µs)``: strictly increasing while the
counter lives, and still increasing after a restart that lost it, as long as the server's clock
moves forward.
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING, Any, Final

from appd.capacity.backend import CapacityStatus, Grant, HolderInfo
from appd.config import redact_url
from appd.errors import CapacityUnavailable, ConfigurationError

if TYPE_CHECKING:
    import redis

__all__ = ["SCRIPT", "RedisBackend", "key_prefix"]

#: Seconds to connect and to wait for a reply before the backend counts as unavailable (less
#: for short leases: a third of ``lease_ttl``, but never under half a second).
SOCKET_TIMEOUT: Final = 2.0
#: The longest a waiter sleeps before retrying on its own (jittered below it).
POLL_MAX: Final = 0.25

SCRIPT: Final = """
local holders, waiters, counter, wake, tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op = ARGV[1]
if redis.replicate_commands then redis.replicate_commands() end  -- TIME, then writes (Redis < 5)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', holders, '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  redis.call('HDEL', tokens, unpack(expired))
end
redis.call('ZREMRANGEBYSCORE', waiters, '-inf', now)
if op == 'acquire' then
  local holder, limit, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local count = redis.call('ZCARD', holders)
  if redis.call('ZSCORE', holders, holder) then
    -- a retried call whose first run admitted it: the same grant again
    return {1, redis.call('HGET', tokens, holder) or '0', count}
  end
  if count < limit then
    local last = tonumber(redis.call('GET', counter) or '0')
    local micros = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local token = math.max(last + 1, micros)
    redis.call('SET', counter, string.format('%.0f', token))
    redis.call('ZADD', holders, now + ttl, holder)
    redis.call('HSET', tokens, holder, string.format('%.0f', token))
    redis.call('PEXPIRE', tokens, ttl * 4)
    redis.call('ZREM', waiters, holder)
    return {1, string.format('%.0f', token), count + 1}
  end
  redis.call('ZADD', waiters, now + ttl, holder)
  return {0, 0, count}
elseif op == 'renew' then
  local holder, ttl = ARGV[2], tonumber(ARGV[3])
  if not redis.call('ZSCORE', holders, holder) then
    return 0
  end
  redis.call('ZADD', holders, 'XX', now + ttl, holder)
  redis.call('PEXPIRE', tokens, ttl * 4)
  return 1
elseif op == 'release' then
  local holder, limit = ARGV[2], tonumber(ARGV[3])
  redis.call('HDEL', tokens, holder)
  local removed = redis.call('ZREM', holders, holder)
  if removed == 1 and redis.call('ZCARD', waiters) > 0 then
    redis.call('RPUSH', wake, '1')
    redis.call('LTRIM', wake, -limit, -1)
    redis.call('PEXPIRE', wake, 60000)
  end
  return removed
elseif op == 'withdraw' then
  return redis.call('ZREM', waiters, ARGV[2])
elseif op == 'status' then
  local entries = redis.call('ZRANGE', holders, 0, -1, 'WITHSCORES')
  local result = {redis.call('ZCARD', waiters), now}
  for i = 1, #entries, 2 do
    local token = redis.call('HGET', tokens, entries[i]) or ''
    table.insert(result, entries[i])
    table.insert(result, entries[i + 1])
    table.insert(result, token)
  end
  return result
end
return redis.error_reply('unknown operation ' .. tostring(op))
"""


def key_prefix(name: str) -> str:
    """The hash-tagged prefix of capacity ``name``'s keys."""
    return "{appd:capacity:" + name + "}"


class RedisBackend:
    """Capacity ``name`` with ``limit`` holders whose leases live ``lease_ttl`` seconds, kept
    in the Redis at ``url``."""

    def __init__(self, name: str, limit: int, url: str, lease_ttl: float) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                f"capacity {name!r} uses a Redis backend, which needs redis-py: "
                "pip install 'appd[redis]'"
            ) from None
        self._redis_module = redis
        #: The last operation timed out: the server may hang, so clean-ups that expiry also
        #: does are skipped rather than each waiting out another socket timeout.
        self._hung = False
        self.name = name
        self.limit = limit
        self.label = redact_url(url)
        self.leases_expire = True
        self.ttl_ms = max(1, round(lease_ttl * 1000))
        self.socket_timeout = max(0.5, min(SOCKET_TIMEOUT, lease_ttl / 3))
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            self.client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
                # One retry, at once, of a connection error only: it reconnects a pooled
                # connection that a restarted server closed (every operation is idempotent:
                # holder ids are unique).  A timeout is not retried: a server that stopped
                # answering fails the operation after one socket timeout, not two.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
        except ValueError:
            raise ConfigurationError(
                f"capacity {name!r}: the backend URL cannot be used ({self.label})"
            ) from None
        prefix = key_prefix(name)
        self.keys = [
            f"{prefix}:{key}" for key in ("holders", "waiters", "token", "wake", "tokens")
        ]
        self._script = self.client.register_script(SCRIPT)

    def _run(self, *args: Any) -> Any:
        try:
            result = self._script(keys=self.keys, args=list(args))
        except self._redis_module.RedisError as exc:
            self._hung = isinstance(exc, self._redis_module.TimeoutError)
            raise self._unavailable(exc) from None
        self._hung = False
        return result

    def _unavailable(self, exc: Exception) -> CapacityUnavailable:
        reason = str(exc).replace(self.client.connection_pool.connection_kwargs.get(
            "password"
        ) or "\0", "***")
        return CapacityUnavailable(
            f"capacity {self.name!r}: the Redis backend at {self.label} failed: "
            f"{type(exc).__name__}: {reason}"
        )

    def try_acquire(self, holder: str) -> Grant | None:
        try:
            admitted, token, _count = self._run("acquire", holder, self.limit, self.ttl_ms)
        except CapacityUnavailable:
            # The script may have run before the reply was lost: give the slot back if we
            # can (else it expires after the ttl), and report the failure.
            self._quietly("release", holder, self.limit)
            raise
        if int(admitted) == 1:
            return Grant(holder, int(token))
        return None

    def _quietly(self, *args: Any) -> None:
        """Run the script, ignoring failure (for clean-ups that expiry also does); skipped
        while the server is not answering."""
        if self._hung:
            return
        with contextlib.suppress(self._redis_module.RedisError):
            self._script(keys=self.keys, args=list(args))

    def wait(self, holder: str, seconds: float, attempt: int) -> None:
        """Block on the wake-up list for a jittered pause at most."""
        pause = min(seconds, self.socket_timeout / 2, POLL_MAX * random.uniform(0.5, 1.0))
        if pause < 0.01:
            return
        try:
            self.client.blpop([self.keys[3]], timeout=pause)
        except self._redis_module.RedisError as exc:
            self._hung = isinstance(exc, self._redis_module.TimeoutError)
            raise self._unavailable(exc) from None

    def withdraw(self, holder: str) -> None:
        self._quietly("withdraw", holder)  # else the waiter entry expires on its own

    def renew(self, grant: Grant) -> bool:
        return int(self._run("renew", grant.holder, self.ttl_ms)) == 1

    def release(self, grant: Grant) -> None:
        self._run("release", grant.holder, self.limit)

    def status(self) -> CapacityStatus:
        reply = self._run("status")
        waiters, now = int(reply[0]), int(reply[1])
        holders = []
        rest = reply[2:]
        for i in range(0, len(rest), 3):
            holder = rest[i].decode() if isinstance(rest[i], bytes) else str(rest[i])
            expires = int(float(rest[i + 1]))
            token = rest[i + 2]
            holders.append(
                HolderInfo(
                    holder,
                    int(token) if token else None,
                    round(max(0, expires - now) / 1000, 3),
                )
            )
        return CapacityStatus(self.name, self.limit, self.label, tuple(holders), waiters)

    def check(self) -> None:
        try:
            self.client.ping()
        except self._redis_module.RedisError as exc:
            raise self._unavailable(exc) from None

    def close(self) -> None:
        self.client.close()
