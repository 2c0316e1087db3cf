"""Every Redis key and TTL the Redis stream bridge uses, in one place.

Key layout (``P`` is the bridge's ``key_prefix``, ``R`` a run id)::

    P:run:{R}:events     Stream   the run's entries, ids 0-1, 0-2, ... (fields e, d, t)
    P:run:{R}:meta       Hash     seq (newest id written), tid/te/td (the terminal entry)
    P:run:{R}:removed    String   tombstone left by cleanup() for readers elsewhere
    P:hub:<hub id>:wake  Stream   pokes one process's shared reader out of its XREAD

The run id sits in a hash tag so one run's keys share a Cluster slot: the
append script touches the stream and its hash in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ENTRY_DATA",
    "ENTRY_EVENT",
    "ENTRY_TERMINAL",
    "META_BASE_PREFIX",
    "META_SEQ",
    "META_TERMINAL_DATA",
    "META_TERMINAL_EVENT",
    "META_TERMINAL_ID",
    "MIN_ACTIVE_TTL",
    "TOMBSTONE_TTL",
    "WAKE_FIELD",
    "WAKE_MAXLEN",
    "WAKE_TTL",
    "RunKeys",
    "active_ttl",
    "hub_wake_key",
    "run_keys",
    "terminal_ttl",
]

# Stream entry fields: one byte each because they are repeated in every entry
# that does not share its macro node's master fields.
ENTRY_EVENT = "e"
ENTRY_DATA = "d"
# Present (value "1") only on the terminal entry: an ordinary event may be named
# "error" too, so the name alone cannot say which entry ends the stream.
ENTRY_TERMINAL = "t"

# Meta hash fields. ``seq`` fences writers even after the stream key is lost;
# the terminal copy lets readers end cleanly when the stream key is gone.
META_SEQ = "seq"
META_TERMINAL_ID = "tid"
META_TERMINAL_EVENT = "te"
META_TERMINAL_DATA = "td"
# A process's first write to a run lets Redis choose its base id; the base is
# remembered under this prefix plus the writer's token, so a retry of that
# write (reply lost after it landed) reuses the base instead of appending again.
META_BASE_PREFIX = "b:"

# The rolling TTL of an active run is refreshed by every write. It must outlive
# the longest legitimate silence (a human-in-the-loop wait, and the sweep that
# would dead-letter a stalled run), else the key vanishes under a live run;
# one day is the floor for deployments with short limits.
MIN_ACTIVE_TTL = 24 * 3600.0

# A tombstone only has to outlast the slowest reader's next look at the run,
# which happens at least once per heartbeat interval (15 s by default).
TOMBSTONE_TTL = 600.0

# The wake stream carries no data, only "look again": a handful of entries is
# plenty, and a TTL lets a crashed process's wake key disappear by itself.
WAKE_FIELD = "w"
WAKE_MAXLEN = 16
WAKE_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class RunKeys:
    """The Redis keys of one run."""

    events: str
    meta: str
    removed: str


def run_keys(prefix: str, run_id: str) -> RunKeys:
    """The keys of ``run_id`` under ``prefix``."""
    base = f"{prefix}:run:{{{run_id}}}"
    return RunKeys(events=f"{base}:events", meta=f"{base}:meta", removed=f"{base}:removed")


def hub_wake_key(prefix: str, hub_id: str) -> str:
    """The wake-up stream of one process's shared reader."""
    return f"{prefix}:hub:{hub_id}:wake"


def active_ttl(max_stream_age: float, hitl_extended_timeout: float, idle_timeout: float) -> float:
    """Seconds an active run's keys live after its last write.

    Longer than any wait the limits allow, so only a run whose writer died
    (and whose housekeeping died with it) expires while still active.
    """
    return max(MIN_ACTIVE_TTL, max_stream_age, hitl_extended_timeout, idle_timeout) + 60.0


def terminal_ttl(terminal_retention_ttl: float) -> float:
    """Seconds a run's keys live after its terminal entry.

    The writer's sweep removes the stream earlier (orphan timeout, with its
    local view of readers); the TTL is the guarantee that holds even when the
    writer is gone, so it is the longest retention the limits allow.
    """
    return terminal_retention_ttl
