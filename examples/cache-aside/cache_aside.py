"""Cache-aside in three regions, from Python (``make example-cache-aside-python``): a handler,
``get_profile``, reads a user's profile from Meridian; on a miss it reads the slow source of
truth (50 ms a read, counted) and writes the profile into Meridian with a one-hour TTL, value
and TTL in one atomic batch, so a region that has applied the write hits it. Every region keeps
a small in-process cache in front of Meridian; a change-feed consumer per region (a thread)
evicts an entry when the feed hands out a change of its key. An update in the source goes with
a deletion of the cache key in the writer's region, which the feed carries to every region's
consumer: no region serves the old profile once its feed has handed out the deletion. A key with
a two-second TTL is a miss again, in every region, once the TTL has passed. Three embedded
engines replicating over QUIC on loopback, configured by ``meridian local-cluster`` (the
directory is the first argument). Exits non-zero when what it shows does not hold."""

import os
import sys
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Tuple, TypeVar

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))

import meridian  # noqa: E402

#: The prefix of the cache keys (``profile:<user>``) and of the feed the consumers follow.
PROFILES = b"profile:"
#: How long Meridian keeps a cached profile (seconds).
CACHE_TTL = 3600.0
#: How long a region trusts its in-process entry at most, whatever Meridian's TTL says: a bound
#: on staleness should its feed consumer stall.
LOCAL_MAX_AGE = 30.0
#: What one read of the source of truth costs.
SOURCE_DELAY = 0.05
#: The longest wait for replication or a feed.
WAIT = 10.0


class Failed(Exception):
    """What the example shows did not hold."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise Failed(message)


T = TypeVar("T")


def need(value: Optional[T], message: str) -> T:
    if value is None:
        raise Failed(message)
    return value


def key(user: str) -> bytes:
    return PROFILES + user.encode("utf-8")


def took(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}µs" if seconds < 1e-3 else f"{seconds * 1e3:.1f}ms"


class Source:
    """The source of truth (a database of record, say): slow, and its reads counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profiles: Dict[str, str] = {}
        self.reads = 0

    def load(self, user: str) -> str:
        time.sleep(SOURCE_DELAY)
        with self._lock:
            self.reads += 1
            return self.profiles[user]

    def update(self, user: str, profile: str) -> None:
        with self._lock:
            self.profiles[user] = profile


class Reply(NamedTuple):
    profile: str
    #: "local" (the in-process cache), "meridian" or "source" (a miss, then cached).
    served: str
    took: float
    #: A miss: the token of the write that cached the profile in Meridian.
    token: Optional[meridian.Token]


def lww(values: list) -> Optional[str]:
    """A last-writer-wins value among a key's values, as a feed event carries them."""
    for value in values:
        if "lww" in value:
            v = value["lww"]
            return bytes.fromhex(v["hex"]).decode("utf-8") if isinstance(v, dict) else str(v)
    return None


class Region:
    """One region: its engine (replicating by itself), its in-process cache, and the feed
    consumer keeping it."""

    def __init__(self, directory: str, replica: str, name: str) -> None:
        self.name = name
        self.engine = meridian.Engine.open_node(os.path.join(directory, f"{replica}.toml"))
        # Everything below is guarded by `changed`.
        self.changed = threading.Condition()
        #: key -> (profile, time.monotonic() until which it is served)
        self.entries: Dict[bytes, Tuple[str, float]] = {}
        #: Changes the feed handed out: a fill that raced with one is checked against Meridian
        #: again before it enters the cache (its value may be what the change replaced).
        self.generation = 0
        #: Per key, its state in the last change the consumer handled (None: deleted).
        self.seen: Dict[bytes, Optional[str]] = {}
        self.evictions = 0
        self.requests = 0
        self.failure: Optional[BaseException] = None
        self._stop = threading.Event()
        # Opened here, before any request: it hands out every change applied from now on.
        self._feed = self.engine.feed(PROFILES)
        self._consumer = threading.Thread(target=self._consume, name=f"feed-{name}", daemon=True)
        self._consumer.start()

    def _consume(self) -> None:
        """Evicts the entry of every key the feed hands out a change of, unless the change
        holds the value cached (the region's own fill, or a repeat)."""
        try:
            while not self._stop.is_set():
                event = self._feed.next(timeout=0.1)
                if event is None:
                    continue
                with self.changed:
                    self.generation += 1
                    if event.reset:
                        # The feed could not follow every change: anything cached may be stale.
                        self.evictions += len(self.entries)
                        self.entries.clear()
                    else:
                        value = None if event.deleted else lww(event.values)
                        entry = self.entries.get(event.key)
                        if entry is not None and entry[0] != value:
                            del self.entries[event.key]
                            self.evictions += 1
                        self.seen[event.key] = value
                    self.changed.notify_all()
        except BaseException as e:  # reported by close() and by the waits
            self.failure = e
        finally:
            self._feed.close()

    def get_profile(self, source: Source, user: str, ttl: float = CACHE_TTL) -> Reply:
        """The handler: a profile, from the in-process cache, else Meridian, else the source
        (cached in Meridian for ``ttl`` seconds)."""
        start = time.monotonic()
        k = key(user)
        with self.changed:
            self.requests += 1
            entry = self.entries.get(k)
            if entry is not None and entry[1] > start:
                return Reply(entry[0], "local", time.monotonic() - start, None)
            self.entries.pop(k, None)
            generation = self.generation
        found = self._read_meridian(k)
        token: Optional[meridian.Token] = None
        if found is not None:
            profile, until = found
            served = "meridian"
        else:
            profile = source.load(user)
            # The value and its TTL in one atomic write: no region reads it without expiry.
            token = self.engine.lww_set(k, profile, ttl=ttl)
            # The TTL runs from the write's time, which is later than `start`.
            until = start + ttl
            served = "source"
        elapsed = time.monotonic() - start
        # Kept in process unless the feed handed out a change meanwhile: then Meridian, which
        # reflects that change, is read again first.
        cached: Optional[Tuple[str, float]] = (profile, until)
        for _ in range(3):
            if cached is None:
                break
            with self.changed:
                if self.generation == generation:
                    self.entries[k] = (cached[0], min(cached[1], time.monotonic() + LOCAL_MAX_AGE))
                    break
                generation = self.generation
            cached = self._read_meridian(k)
        return Reply(profile, served, elapsed, token)

    def _read_meridian(self, k: bytes) -> Optional[Tuple[str, float]]:
        """The profile Meridian holds here and until when (monotonic), if it holds one."""
        value = self.engine.lww_get(k)
        if value is None:
            return None
        at = self.engine.expires_at(k)
        left = LOCAL_MAX_AGE if at is None else max(0.0, at - time.time())
        return value.decode("utf-8"), time.monotonic() + left

    def cached(self, user: str) -> bool:
        with self.changed:
            return key(user) in self.entries

    def wait_seen(self, user: str, value: Optional[str]) -> None:
        """Waits until the feed consumer has handled a change of ``user``'s key to ``value``
        (None: its deletion)."""
        k = key(user)
        with self.changed:
            ok = self.changed.wait_for(
                lambda: self.failure is not None or (k in self.seen and self.seen[k] == value), WAIT)
        check(self.failure is None, f"{self.name}'s feed consumer failed: {self.failure!r}")
        check(ok, f"{self.name}'s feed did not hand out the change of {user} within {WAIT} s")

    def settle(self, token: meridian.Token, user: str, value: Optional[str]) -> None:
        """Waits until this region has applied ``token`` and its consumer has handled it."""
        check(self.engine.wait_covers(token, WAIT), f"{self.name} did not apply the write within {WAIT} s")
        self.wait_seen(user, value)

    def close(self) -> None:
        """Stops the feed consumer (reporting its failure, if any), then the engine."""
        self._stop.set()
        self._consumer.join()
        self.engine.close()
        check(self.failure is None, f"{self.name}'s feed consumer failed: {self.failure!r}")


def expect(region: Region, source: Source, user: str, served: str, profile: str, reads: int,
           reply: Reply) -> Reply:
    how = {"local": "hit, in-process cache", "meridian": "hit, Meridian",
           "source": "miss: source read, cached in Meridian"}[reply.served]
    print(f"  {region.name:<13} {user:<6} {took(reply.took):>9}  {how:<38} {reply.profile}")
    check(reply.served == served, f"{region.name}: {user} came from {reply.served}, expected {served}")
    check(reply.profile == profile, f"{region.name}: {user} read {reply.profile}, expected {profile}")
    check(source.reads == reads, f"{source.reads} source reads, expected {reads}")
    return reply


def fill(reply: Reply) -> meridian.Token:
    return need(reply.token, f"expected a miss, got {reply.served}")


def run(us: Region, eu: Region, ap: Region) -> None:
    regions = [us, eu, ap]
    source = Source()
    alice = '{"name":"Alice","plan":"free"}'
    alice_pro = '{"name":"Alice","plan":"pro"}'
    bob = '{"name":"Bob","plan":"free"}'
    source.update("alice", alice)
    source.update("bob", bob)

    print("get_profile reads the region's in-process cache, Meridian, then the source (50 ms),")
    print("caching in Meridian for an hour; a feed consumer per region evicts changed entries:")
    miss = expect(us, source, "alice", "source", alice, 1, us.get_profile(source, "alice"))
    token = fill(miss)
    at = need(us.engine.expires_at(key("alice")), "the cached profile has no expiry")
    left = at - time.time()
    print(f"  the cached profile expires in {left:.0f} s (one hour)")
    check(CACHE_TTL - 60 <= left <= CACHE_TTL + 1, f"the cached profile expires in {left} s, not in about an hour")

    hits: List[float] = []
    for region in (eu, ap):
        region.settle(token, "alice", alice)
        hits.append(expect(region, source, "alice", "meridian", alice, 1, region.get_profile(source, "alice")).took)
        there = region.engine.expires_at(key("alice"))
        check(there == at, f"{region.name} has the profile expire at {there}, us-east at {at}")
    us.settle(token, "alice", alice)
    local_hits: List[float] = []
    for region in regions:
        local_hits.append(expect(region, source, "alice", "local", alice, 1, region.get_profile(source, "alice")).took)
    print(f"  a miss took {took(miss.took)}, a Meridian hit at most {took(max(hits))}, "
          f"an in-process hit at most {took(max(local_hits))}")
    check(max(hits) < miss.took and max(local_hits) < miss.took, "a hit was not faster than a miss")

    print("alice goes pro: us-east updates the source and deletes the cache key; the feed evicts:")
    source.update("alice", alice_pro)
    deleted = time.monotonic()
    us.engine.delete(key("alice"))
    for region in regions:
        region.wait_seen("alice", None)
        check(not region.cached("alice"), f"{region.name} still holds alice after its feed handed out the deletion")
    print(f"  every region's in-process entry was evicted within {took(time.monotonic() - deleted)} of the deletion")
    token = fill(expect(eu, source, "alice", "source", alice_pro, 2, eu.get_profile(source, "alice")))
    for region in (us, ap):
        region.settle(token, "alice", alice_pro)
        expect(region, source, "alice", "meridian", alice_pro, 2, region.get_profile(source, "alice"))

    print("bob is cached with a 2 s TTL: a miss again, in every region, once it has passed:")
    short = 2.0
    token = fill(expect(ap, source, "bob", "source", bob, 3, ap.get_profile(source, "bob", ttl=short)))
    at = need(ap.engine.expires_at(key("bob")), "bob's cached profile has no expiry")
    left = at - time.time()
    check(0 <= left <= short + 1, f"bob's cached profile expires in {left} s, not in about {short} s")
    us.settle(token, "bob", bob)
    eu.settle(token, "bob", bob)
    expect(us, source, "bob", "meridian", bob, 3, us.get_profile(source, "bob"))
    expect(ap, source, "bob", "local", bob, 3, ap.get_profile(source, "bob"))
    time.sleep(max(0.0, at - time.time()) + 0.2)
    for region in regions:
        check(region.engine.lww_get(key("bob")) is None, f"{region.name} still reads bob's profile after its TTL")
    print(f"  {left + 0.2:.1f} s later no region reads bob's key in Meridian:")
    expect(us, source, "bob", "source", bob, 4, us.get_profile(source, "bob", ttl=short))

    requests = sum(r.requests for r in regions)
    evictions = ", ".join(f"{r.name} {r.evictions}" for r in regions)
    print(f"{source.reads} source reads for {requests} requests; in-process entries the feed evicted: {evictions}")


def main() -> None:
    directory = sys.argv[1]
    regions = [Region(directory, "use1", "us-east"), Region(directory, "euw1", "eu-west"),
               Region(directory, "apn1", "ap-northeast")]
    failure: Optional[Failed] = None
    try:
        run(*regions)
    except Failed as e:
        failure = e
    finally:
        for region in regions:
            try:
                region.close()
            except Failed as e:
                failure = failure or e
    if failure is not None:
        sys.exit(f"cache-aside: {failure}")


if __name__ == "__main__":
    main()
