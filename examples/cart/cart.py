"""A shopping cart in three regions, from Python (``make example-cart-python``): an OR-map of
counters; two regions add items at once, a third removes one it has seen, every region ends
with the same cart; a session's writes follow it across a failover (its token). Three embedded
engines, each replicating by itself over QUIC on loopback, configured by
``meridian local-cluster`` (the directory is the first argument)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))

import meridian  # noqa: E402

CART = b"cart:42"
WAIT = 20.0


def show(region: str, engine: meridian.Engine) -> dict:
    cart = {}
    for item in (b"apple", b"pen", b"book"):
        n = engine.map_get_counter(CART, item)
        if n is not None:
            cart[item.decode()] = n
    print(f"  {region:<13} {cart}")
    return cart


def main() -> None:
    directory = sys.argv[1]
    us = meridian.Engine.open_node(os.path.join(directory, "use1.toml"))
    eu = meridian.Engine.open_node(os.path.join(directory, "euw1.toml"))
    ap = meridian.Engine.open_node(os.path.join(directory, "apn1.toml"))
    with us, ap:
        print("us-east and eu-west add items at the same time:")
        seen = us.map_counter_add(CART, "apple", 2)
        seen.merge(eu.map_counter_add(CART, "apple", 1))
        seen.merge(eu.map_counter_add(CART, "pen", 1))
        assert ap.wait_covers(seen, WAIT), "ap-northeast did not get the adds"
        print("ap-northeast, which has seen both, removes the pen:")
        seen.merge(ap.map_remove(CART, "pen"))
        assert us.wait_covers(seen, WAIT) and eu.wait_covers(seen, WAIT)
        carts = [show("us-east", us), show("eu-west", eu), show("ap-northeast", ap)]
        assert all(c == {"apple": 3} for c in carts), "the regions disagree"

        print("a session adds a book in eu-west (held by a second region, as a majority write")
        print("would be); eu-west fails; the session reads on in ap-northeast with its token:")
        session = eu.map_counter_add(CART, "book", 1)
        assert us.wait_covers(session, WAIT), "the write did not reach a second region"
        eu.close()
        assert ap.wait_covers(session, WAIT), "the session's write did not reach ap-northeast"
        assert show("ap-northeast", ap).get("book") == 1, "the session lost its write"
        print("every region merged the same cart, and the session read its own write after the failover")


if __name__ == "__main__":
    main()
