"""Fan-out from a change feed, from Python (``make example-fanout-python``): a consumer keeps
a derived view, the number of items per category, from the feed of ``item:`` keys. Delivery is
at least once, so the view is kept as a function of each key's latest value (a change handed
out twice moves nothing the second time); when the consumer's region fails, it resumes in
another region from the last token it handled and ends with the view the data gives. Three
embedded engines replicating over QUIC on loopback, configured by ``meridian local-cluster``
(the directory is the first argument)."""

import os
import sys
from collections import Counter
from typing import Dict, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))

import meridian  # noqa: E402

ITEMS = b"item:"
WAIT = 20.0


def category(values: Optional[list]) -> Optional[str]:
    """An item's category: its last-writer-wins value."""
    for value in values or []:
        if "lww" in value:
            return str(value["lww"])
    return None


class View:
    """Items per category, kept from the feed: idempotent, so repeats are harmless."""

    def __init__(self) -> None:
        self.items: Dict[bytes, str] = {}
        self.position: Optional[meridian.Token] = None
        self.changes = 0
        self.repeats = 0

    def apply(self, event: meridian.FeedEvent) -> None:
        assert not event.reset, "the feed was reset: rebuild from a scan"
        self.changes += 1
        new = category(event.values)
        old = self.items.get(event.key)
        if old == new:
            self.repeats += 1
        elif new is None:
            del self.items[event.key]
        else:
            self.items[event.key] = new
        self.position = event.token

    def catch_up(self, feed: meridian.Feed) -> None:
        while True:
            event = feed.next(timeout=0.3)
            if event is None:
                return
            self.apply(event)

    def counts(self) -> Dict[str, int]:
        return dict(sorted(Counter(self.items.values()).items()))


def scanned(engine: meridian.Engine) -> Dict[str, int]:
    """The view computed from the data itself."""
    counts: Counter = Counter()
    for key, _ in engine.scan(ITEMS):
        c = category(engine.read(key))
        if c is not None:
            counts[c] += 1
    return dict(sorted(counts.items()))


def main() -> None:
    directory = sys.argv[1]
    us = meridian.Engine.open_node(os.path.join(directory, "use1.toml"))
    eu = meridian.Engine.open_node(os.path.join(directory, "euw1.toml"))
    ap = meridian.Engine.open_node(os.path.join(directory, "apn1.toml"))
    with us, ap:
        print("a consumer in eu-west follows the feed of item: keys and counts items per category;")
        view = View()
        feed = eu.feed(ITEMS, from_token=meridian.Token.empty())
        print("us-east and ap-northeast write items, one is moved to another category, one deleted:")
        seen = meridian.Token.empty()
        for i, c in enumerate(["books", "games", "books", "tools"]):
            seen.merge(us.lww_set(f"item:{i}", c))
        for i, c in enumerate(["games", "books"]):
            seen.merge(ap.lww_set(f"item:a{i}", c))
        assert ap.wait_covers(seen, WAIT), "ap-northeast did not get the writes"
        seen.merge(ap.lww_set(b"item:1", b"tools"))
        seen.merge(ap.delete(b"item:3"))
        assert eu.wait_covers(seen, WAIT), "eu-west did not get the writes"
        view.catch_up(feed)
        print(f"  eu-west's view   {view.counts()}")
        assert view.counts() == scanned(eu), "the view disagrees with the data"

        print("at-least-once: the consumer restarts from an older token; repeats change nothing:")
        before, changes, repeats = view.counts(), view.changes, view.repeats
        with eu.feed(ITEMS, from_token=meridian.Token.empty()) as again:
            view.catch_up(again)
        print(f"  {view.changes - changes} changes handed out again, {view.repeats - repeats} of them repeats")
        assert view.counts() == before, "a repeated change moved the view"

        print("eu-west fails; the consumer resumes in us-east from its last token while writes go on:")
        position = view.position
        feed.close()
        eu.close()
        with us.feed(ITEMS, from_token=position) as resumed:
            seen.merge(ap.lww_set(b"item:a2", b"games"))
            seen.merge(us.lww_set(b"item:4", b"books"))
            assert us.wait_covers(seen, WAIT), "us-east did not get the writes"
            view.catch_up(resumed)
        print(f"  us-east's view   {view.counts()}")
        assert view.counts() == scanned(us), "the view missed a change across the failover"
        print("the view kept from the feed equals the data in every region it was read from")


if __name__ == "__main__":
    main()
