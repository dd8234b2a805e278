"""Every bound of the data plane, with where it comes from."""

# Request head: 64 KiB and 100 fields. Peers: nginx large_client_header_buffers
# 4 x 8 KiB, Apache LimitRequestFieldSize 8 KiB x LimitRequestFields 100, h11 16 KiB.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100

# Flow control: pause the sending side once this much is queued for a slow receiver, so a
# 100 MiB body streams with a flat memory profile (asyncio's own default high-water is 64 KiB).
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024

# Body bytes kept while the upstream connection is still being opened; past it we stop
# reading from the client (back-pressure, not buffering).
MAX_PENDING_BODY = 256 * 1024

# Idle keep-alive connections kept per upstream address, and how long (nginx upstream
# keepalive_timeout: 60 s; most origins close idle connections after 5-75 s).
POOL_MAX_IDLE_PER_HOST = 64
POOL_IDLE_TIMEOUT = 30.0

# How often timeouts are swept: one timer for all connections instead of one per request.
SWEEP_INTERVAL = 0.5

# Response head from an upstream: a garbage-spewing origin must not grow us without bound.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024

# A graceful stop checks this often whether the requests in flight have finished (the
# bound itself is [proxy] drain_timeout).
DRAIN_POLL = 0.05
