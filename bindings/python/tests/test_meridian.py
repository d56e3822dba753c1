"""The Python package over the C ABI: values of every type, bad arguments, two embedded
engines replicating over QUIC on loopback, a routed client failing over when a node stops,
Ctrl-C interrupting a client call the cluster holds up, and an interpreter exiting with handles
open. Runs under pytest or unittest.

Needs ``MERIDIAN_LIB`` (libmeridian.so) and ``MERIDIAN_BIN`` (the meridian executable), which
``make test`` sets.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import meridian  # noqa: E402

BIN = os.environ.get("MERIDIAN_BIN") or os.path.expanduser("~/.cache/meridian/target/release/meridian")


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def certs(directory, cluster, replicas, clients):
    args = [BIN, "certs", "init", "--dir", directory, "--cluster", cluster]
    for name, region in replicas:
        args += ["--replica", f"{name}:{region}"]
    for c in clients:
        args += ["--client", c]
    subprocess.run(args, check=True, capture_output=True)


def node_config(directory, cluster, me, peers, place=None):
    """A node configuration for replica ``me`` = (name, region, port); peers likewise."""
    name, region, port = me
    lines = [
        f'cluster = "{cluster}"', f'name = "{name}"', f'region = "{region}"',
        f'data_dir = "data-{name}"', f'listen = "127.0.0.1:{port}"',
    ]
    if place:
        lines.append(f"location = {{ latitude = {place[0]}, longitude = {place[1]} }}")
    lines += ["[tls]", f'ca = "certs/{name}/ca.pem"', f'cert = "certs/{name}/{name}.pem"',
              f'key = "certs/{name}/{name}.key"']
    for p_name, p_region, p_port in peers:
        lines += ["[[peers]]", f'name = "{p_name}"', f'region = "{p_region}"',
                  f'address = "127.0.0.1:{p_port}"']
    path = os.path.join(directory, f"{name}.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "ffi",
                      "include", "meridian.h")


def header_functions():
    """Every function the C header declares: name -> argument types (as written)."""
    import re
    with open(HEADER) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"^[a-z][\w ]*?\**\s*\**(meridian_\w+)\(([^)]*)\);", text, re.M):
        args = [a.strip() for a in m.group(2).split(",") if a.strip() and a.strip() != "void"]
        out[m.group(1)] = [re.sub(r"\s*\b\w+$", "", a).replace(" *", "*").strip() for a in args]
    return out


class SignaturesMatchTheHeader(unittest.TestCase):
    """The ctypes table is checked against the generated header, argument by argument."""

    def test_every_signature_in_the_table_is_the_headers(self):
        import ctypes
        c_of = {
            "const uint8_t*": ctypes.c_char_p, "const char*": ctypes.c_char_p,
            "size_t": ctypes.c_size_t, "int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32,
            "uint8_t": ctypes.c_uint8, "uint64_t": ctypes.c_uint64,
            "int64_t*": ctypes.POINTER(ctypes.c_int64), "int32_t*": ctypes.POINTER(ctypes.c_int32),
            "uint64_t*": ctypes.POINTER(ctypes.c_uint64),
            "enum MeridianKind*": ctypes.POINTER(ctypes.c_int32),
            "struct MeridianBuffer*": ctypes.POINTER(meridian._Buffer),
        }
        declared = header_functions()
        self.assertIn("meridian_lww_set", declared)
        for name, args in meridian._SIGNATURES.items():
            self.assertIn(name, declared, f"{name} is not in the header")
            c_args = declared[name]
            self.assertEqual(len(args), len(c_args), f"{name}: {c_args}")
            for py, c in zip(args, c_args):
                if c in c_of:
                    self.assertIs(py, c_of[c], f"{name}: {c} is not {py}")
                elif c.endswith("**"):
                    self.assertIs(py, ctypes.POINTER(ctypes.c_void_p), f"{name}: {c}")
                elif c.startswith(("struct Meridian", "const struct Meridian")) and c.endswith("*"):
                    self.assertIs(py, ctypes.c_void_p, f"{name}: {c}")
                else:
                    self.fail(f"{name}: no rule for the C type {c!r}")


class EmbeddedValues(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.engine = meridian.Engine.open(self.dir.name)

    def tearDown(self):
        self.engine.close()
        self.dir.cleanup()

    def test_every_value_type_reads_back(self):
        e = self.engine
        e.lww_set("name", "ada")
        self.assertEqual(e.lww_get(b"name"), b"ada")
        e.counter_add("views", 5)
        e.counter_add("views", -2)
        self.assertEqual(e.counter_get("views"), 3)
        e.put("bio", "first")
        siblings = e.get("bio")
        self.assertEqual(siblings.values, [b"first"])
        e.put("bio", "second", context=siblings.context)
        self.assertEqual(e.get("bio").values, [b"second"])
        e.set_add("tags", "a")
        e.set_add("tags", "b")
        e.set_remove("tags", "a")
        self.assertEqual(e.set_get("tags"), [b"b"])
        e.map_counter_add("cart", "apple", 2)
        e.map_lww_set("cart", "note", "gift")
        self.assertEqual(e.map_get_counter("cart", "apple"), 2)
        self.assertEqual(e.map_get_lww("cart", "note"), b"gift")
        e.map_remove("cart", "apple")
        self.assertIsNone(e.map_get_counter("cart", "apple"))
        e.delete("name")
        self.assertIsNone(e.lww_get("name"))
        self.assertIsNone(e.counter_get("missing"))
        e.map_apply("deep", ["items", "plum"], "counter_add", delta=4)
        e.map_apply("deep", ["items", "note"], "lww_set", "ripe")
        self.assertEqual(e.read("deep"), [{"map": {"items": [{"map": {
            "note": [{"lww": "ripe"}], "plum": [{"counter": 4}]}}]}}])
        with self.assertRaises(ValueError):
            e.map_apply("deep", ["items"], "explode")
        keys = [k for k, _ in e.scan()]
        self.assertEqual(keys, sorted(keys))
        self.assertIn((b"views", "counter"), list(e.scan("v")))

    def test_the_library_says_its_version(self):
        self.assertRegex(meridian.version(), r"^\d+\.\d+\.\d+$")

    def test_arguments_are_checked_not_wrapped_or_cut(self):
        e = self.engine
        for bad in (2**64 + 5, 2**63, -(2**63) - 1):
            with self.assertRaises(OverflowError):
                e.counter_add("n", bad)
            with self.assertRaises(OverflowError):
                meridian.Batch().counter_add("n", bad)
        self.assertIsNone(e.counter_get("n"), "nothing was added")
        e.counter_add("n", 2**63 - 1)
        self.assertEqual(e.counter_get("n"), 2**63 - 1)
        with self.assertRaises(ValueError):
            meridian.Engine.open(self.dir.name + "\0elsewhere")
        with self.assertRaises(ValueError):
            meridian.Client(self.dir.name + "\0client.toml")

    def test_many_values_are_read_in_one_call(self):
        e = self.engine
        e.lww_set("a", "1")
        e.lww_set("c", b"\xff" * 300)
        e.counter_add("n", 1)
        self.assertEqual(e.lww_get_many(["a", b"b", "c", "n", "a"]),
                         [b"1", None, b"\xff" * 300, None, b"1"])
        self.assertEqual(e.lww_get_many([]), [])
        with self.assertRaises(meridian.TooLargeError):
            e.lww_get_many(["k"] * 10_001)
        # What one call hands out is bounded too (32 MiB): ask for fewer keys.
        for i in range(9):
            e.lww_set(f"big{i}", b"x" * 4_000_000)
        with self.assertRaises(meridian.TooLargeError):
            e.lww_get_many([f"big{i}" for i in range(9)])
        self.assertEqual(len(e.lww_get_many([f"big{i}" for i in range(4)])), 4)

    def test_a_scan_has_no_silent_limit(self):
        e = self.engine
        for i in range(2_500):
            e.lww_set(f"row:{i:05}", "x")
        e.lww_set("rows", "outside the prefix")
        rows = [k for k, _ in e.scan("row:", page=700)]
        self.assertEqual(len(rows), 2_500)
        self.assertEqual(rows, sorted(rows))
        self.assertEqual(len(list(e.scan("row:", limit=1_234))), 1_234)
        self.assertEqual(len(list(e.scan(b"\xff\xff"))), 0)

    def test_a_long_wait_is_interrupted_by_ctrl_c(self):
        import signal
        other_dir = tempfile.TemporaryDirectory()
        other = meridian.Engine.open(other_dir.name)
        elsewhere = other.lww_set("k", "v")  # never applied here: the wait cannot succeed
        other.close()

        def interrupt(*_):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        started = time.monotonic()
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with self.assertRaises(KeyboardInterrupt):
                self.engine.wait_covers(elsewhere, 30)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        self.assertLess(time.monotonic() - started, 5, "the wait was not interrupted")
        other_dir.cleanup()

    def test_an_engine_dropped_without_close_is_closed(self):
        import gc
        d = tempfile.TemporaryDirectory()
        e = meridian.Engine.open(d.name)
        e.lww_set("k", "v")
        del e
        gc.collect()
        again = meridian.Engine.open(d.name)  # the directory's lock was released
        self.assertEqual(again.lww_get("k"), b"v")
        again.close()
        d.cleanup()

    def test_a_batch_is_all_or_nothing(self):
        e = self.engine
        e.lww_set("x", "1")
        e.commit(meridian.Batch().counter_add("n", 1).set_add("s", "e"))
        self.assertEqual(e.counter_get("n"), 1)
        with self.assertRaises(meridian.WrongTypeError):
            e.commit(meridian.Batch().counter_add("n", 1).counter_add("x", 1))
        self.assertEqual(e.counter_get("n"), 1, "nothing of the failed batch was written")

    def test_tokens_travel_as_bytes(self):
        token = self.engine.lww_set("k", "v")
        again = meridian.Token.from_bytes(token.to_bytes())
        session = meridian.Token.empty()
        session.merge(again)
        self.assertTrue(self.engine.wait_covers(session, 0.1))


class BadArguments(unittest.TestCase):
    def test_bad_arguments_raise_clear_exceptions(self):
        with tempfile.TemporaryDirectory() as d:
            e = meridian.Engine.open(d)
            with self.assertRaises(ValueError):
                e.lww_set(b"", b"v")
            with self.assertRaises(TypeError):
                e.lww_set(42, b"v")
            e.lww_set("k", "v")
            with self.assertRaises(meridian.WrongTypeError):
                e.counter_add("k", 1)
            with self.assertRaises(meridian.TooLargeError):
                e.lww_set("big", b"x" * (5 << 20))
            with self.assertRaises(ValueError):
                meridian.Token.from_bytes(b"\x07garbage")
            e.close()
            e.close()  # closing twice is fine
            with self.assertRaises(meridian.ClosedError):
                e.lww_get("k")
            with self.assertRaises(meridian.MeridianError) as raised:
                meridian.Engine.open_node("/nonexistent.toml")
            self.assertIn("nonexistent", str(raised.exception))


class TwoEmbeddedEngines(unittest.TestCase):
    def test_two_engines_replicate_over_quic_and_converge_with_siblings(self):
        with tempfile.TemporaryDirectory() as d:
            regions = [("a", "us-east"), ("b", "eu-west")]
            certs(os.path.join(d, "certs"), "py", regions, [])
            ports = [free_port(), free_port()]
            nodes = [(n, r, p) for (n, r), p in zip(regions, ports)]
            configs = [node_config(d, "py", nodes[i], [nodes[1 - i]]) for i in range(2)]
            a = meridian.Engine.open_node(configs[0])
            b = meridian.Engine.open_node(configs[1])
            with a, b:
                ta = a.put("cart", "from-a")  # neither has seen the other's write
                tb = b.put("cart", "from-b")
                self.assertTrue(b.wait_covers(ta, 20))
                self.assertTrue(a.wait_covers(tb, 20))
                for engine in (a, b):
                    self.assertEqual(sorted(engine.get("cart").values), [b"from-a", b"from-b"])


class RoutedClient(unittest.TestCase):
    def test_the_routed_client_fails_over_when_a_node_stops(self):
        with tempfile.TemporaryDirectory() as d:
            regions = [("euw1", "eu-west"), ("use1", "us-east")]
            certs(os.path.join(d, "certs"), "py", regions, ["t"])
            ports = [free_port(), free_port()]
            places = [(53.3, -6.3), (39.0, -77.5)]
            nodes = [(n, r, p) for (n, r), p in zip(regions, ports)]
            configs = [node_config(d, "py", nodes[i], [nodes[1 - i]], places[i]) for i in range(2)]
            procs = []
            try:
                for c in configs:
                    procs.append(subprocess.Popen([BIN, "node", "--config", c], stdout=subprocess.PIPE,
                                                  stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"}))
                for p in procs:
                    self.assertIn(b"listening on", p.stdout.readline())
                cluster = os.path.join(d, "client.toml")
                with open(cluster, "w") as f:
                    f.write('cluster = "py"\ncerts = "certs/client-t"\nclient = "t"\n'
                            "near = { latitude = 48.85, longitude = 2.35 }\n")
                    for (n, r, p), (lat, lon) in zip(nodes, places):
                        f.write(f'[[seeds]]\nname = "{n}"\nregion = "{r}"\naddress = "127.0.0.1:{p}"\n'
                                f"location = {{ latitude = {lat}, longitude = {lon} }}\n")
                with meridian.Client(cluster) as client:
                    deadline = time.time() + 20
                    while True:  # until the two regions are linked: then eu-west, nearest, takes it
                        try:
                            client.lww_set("k", "1", consistency="all")
                            if client.region == "eu-west":
                                break
                        except meridian.MeridianError:
                            pass
                        self.assertLess(time.time(), deadline, "eu-west never took the write")
                        time.sleep(0.2)
                    procs[0].terminate()
                    procs[0].wait(10)
                    client.lww_set("k", "2")
                    self.assertEqual(client.region, "us-east")
                    self.assertEqual(client.lww_get("k"), b"2")
                    client.map_counter_add("cart", "apple", 2)
                    client.map_lww_set("cart", "note", "gift")
                    self.assertEqual(client.map_get_counter("cart", "apple"), 2)
                    self.assertEqual(client.map_get_lww("cart", "note"), b"gift")
                    client.map_remove("cart", "note")
                    self.assertIsNone(client.map_get_lww("cart", "note"))
                    client.set_add("tags", "x")
                    client.set_add("tags", "y")
                    client.set_remove("tags", "x")
                    self.assertEqual(client.set_get("tags"), [b"y"])
                    client.commit(meridian.Batch().counter_add("n", 3).set_add("tags", "z"))
                    self.assertEqual(client.counter_get("n"), 3)
                    self.assertEqual(sorted(client.set_get("tags")), [b"y", b"z"])
                    self.assertEqual(client.read("n"), [{"counter": 3}])
                    self.assertEqual([k for k, _ in client.scan("ta")], [b"tags"])
                    self.assertIn((b"n", "counter"), list(client.scan()))
                    self.assertIsNone(client.read("nothing"))
                    client.put("reg", "v")
                    client.delete("k")
                    self.assertIsNone(client.lww_get("k"))
                    # Expiry through the client: writes with a TTL, expire, persist.
                    before = time.time()
                    client.lww_set("ttl:v", "soon", ttl=1.0)
                    client.counter_add("ttl:c", 3, ttl=1.0)
                    client.set_add("ttl:s", "a")
                    client.expire("ttl:s", 1.0)
                    client.commit(meridian.Batch().lww_set("ttl:b", "1").ttl("ttl:b", 1.0))
                    client.lww_set("ttl:kept", "k", ttl=1.0)
                    client.persist("ttl:kept")
                    at = client.expires_at("ttl:v")
                    self.assertGreaterEqual(at, before + 1.0 - 0.01)
                    self.assertLessEqual(at, time.time() + 1.0 + 0.01)
                    self.assertEqual(client.lww_get("ttl:v"), b"soon")
                    self.assertEqual(client.counter_get("ttl:c"), 3)
                    self.assertIsNotNone(client.expires_at("ttl:s"))
                    self.assertIsNone(client.expires_at("ttl:kept"))
                    self.assertIsNone(client.expires_at("nothing"))
                    with self.assertRaises(ValueError):
                        client.lww_set("ttl:v", "v", ttl=-1)
                    time.sleep(max(0.0, at + 0.2 - time.time()))
                    self.assertIsNone(client.lww_get("ttl:v"))
                    self.assertIsNone(client.counter_get("ttl:c"))
                    self.assertIsNone(client.set_get("ttl:s"))
                    self.assertIsNone(client.lww_get("ttl:b"))
                    self.assertEqual(client.lww_get("ttl:kept"), b"k")
                    client.counter_add("ttl:c", 2)  # a write after expiry starts afresh
                    self.assertEqual(client.counter_get("ttl:c"), 2)
                    with self.assertRaises(ValueError):
                        client.lww_set("k", "v", consistency="most")
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
                    p.stdout.close()


class Expiry(unittest.TestCase):
    """Times to live: a value is read until its time, then not, in every region alike (the
    writer's hybrid logical clock decides); a write without a TTL keeps the pending expiry;
    persist removes it; a write after expiry starts afresh."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.engine = meridian.Engine.open(self.dir.name)

    def tearDown(self):
        self.engine.close()
        self.dir.cleanup()

    def test_a_value_written_with_a_ttl_is_read_then_gone(self):
        e = self.engine
        e.lww_set("k", "v", ttl=1.0)
        self.assertEqual(e.lww_get("k"), b"v")
        time.sleep(1.2)
        self.assertIsNone(e.lww_get("k"))
        self.assertIsNone(e.expires_at("k"))
        self.assertIsNone(e.read("k"))
        self.assertEqual(list(e.scan("k")), [])

    def test_expires_at_is_about_now_plus_the_ttl(self):
        e = self.engine
        before = time.time()
        e.lww_set("k", "v", ttl=30)
        after = time.time()
        at = e.expires_at("k")
        self.assertGreaterEqual(at, before + 30 - 0.001)
        self.assertLessEqual(at, after + 30 + 0.001)
        # A write without a TTL keeps the pending expiry.
        e.lww_set("k", "v2")
        self.assertEqual(e.expires_at("k"), at)
        # Expire on a key that had none; an expiry at a time; none on an absent key.
        e.counter_add("n", 1)
        self.assertIsNone(e.expires_at("n"))
        e.expire("n", 10)
        self.assertAlmostEqual(e.expires_at("n"), time.time() + 10, delta=1)
        when = round(time.time() + 60, 3)
        e.expire_at("n", when)
        self.assertAlmostEqual(e.expires_at("n"), when, places=3)
        e.expire("absent", 10)
        self.assertIsNone(e.expires_at("absent"))
        self.assertIsNone(e.lww_get("absent"))
        # Every write takes a TTL, atomically with it.
        e.put("reg", "r", ttl=60)
        e.set_add("set", "a", ttl=60)
        e.set_remove("set2", "a", ttl=60)
        e.map_lww_set("map", "note", "gift", ttl=60)
        e.map_counter_add("map2", "apple", 2, ttl=60)
        e.map_remove("map3", "apple", ttl=60)
        e.map_apply("deep", ["items", "plum"], "counter_add", delta=4, ttl=60)
        e.counter_add("count", 1, ttl=60)
        for key in ("reg", "set", "map", "map2", "deep", "count"):
            self.assertAlmostEqual(e.expires_at(key), time.time() + 60, delta=2, msg=key)
        self.assertEqual(e.get("reg").values, [b"r"])
        self.assertEqual(e.set_get("set"), [b"a"])
        self.assertEqual(e.map_get_lww("map", "note"), b"gift")
        self.assertEqual(e.map_get_counter("map2", "apple"), 2)
        self.assertEqual(e.read("deep"), [{"map": {"items": [{"map": {"plum": [{"counter": 4}]}}]}}])
        self.assertEqual(e.counter_get("count"), 1)

    def test_persist_keeps_a_key_past_its_ttl(self):
        e = self.engine
        e.lww_set("kept", "v", ttl=0.5)
        e.lww_set("gone", "v", ttl=0.5)
        e.persist("kept")
        self.assertIsNone(e.expires_at("kept"))
        time.sleep(0.7)
        self.assertEqual(e.lww_get("kept"), b"v")
        self.assertIsNone(e.lww_get("gone"))

    def test_a_write_after_expiry_starts_afresh(self):
        e = self.engine
        e.counter_add("c", 5, ttl=0.5)
        e.counter_add("c", 1)  # covered by the pending expiry
        self.assertEqual(e.counter_get("c"), 6)
        e.set_add("s", "a", ttl=0.5)
        time.sleep(0.7)
        self.assertIsNone(e.counter_get("c"))
        e.counter_add("c", 2)
        self.assertEqual(e.counter_get("c"), 2, "counts from the new increment only")
        self.assertIsNone(e.expires_at("c"))
        e.set_add("s", "b")
        self.assertEqual(e.set_get("s"), [b"b"], "no element of the expired set comes back")

    def test_a_batch_gives_its_writes_a_ttl(self):
        e = self.engine
        batch = (meridian.Batch()
                 .ttl("a", 0.5)  # before its write: the order in the batch does not matter
                 .lww_set("a", "1")
                 .counter_add("n", 1).ttl("n", 0.5)
                 .lww_set("p", "x").ttl("p", 0.5).persist("p")
                 .lww_set("t", "y").expire_at("t", time.time() + 0.5))
        e.commit(batch)
        self.assertEqual(e.lww_get("a"), b"1")
        self.assertEqual(e.counter_get("n"), 1)
        self.assertIsNone(e.expires_at("p"))
        self.assertAlmostEqual(e.expires_at("t"), time.time() + 0.5, delta=0.5)
        time.sleep(0.7)
        self.assertIsNone(e.lww_get("a"))
        self.assertIsNone(e.counter_get("n"))
        self.assertIsNone(e.lww_get("t"))
        self.assertEqual(e.lww_get("p"), b"x")

    def test_bad_expiry_arguments_are_refused(self):
        e = self.engine
        for bad in (-1, -0.001, float("nan"), float("inf"), 1e12):
            with self.assertRaises(ValueError, msg=repr(bad)):
                e.lww_set("k", "v", ttl=bad)
            with self.assertRaises(ValueError, msg=repr(bad)):
                e.expire("k", bad)
            with self.assertRaises(ValueError, msg=repr(bad)):
                e.expire_at("k", bad)
            with self.assertRaises(ValueError, msg=repr(bad)):
                meridian.Batch().ttl("k", bad)
            with self.assertRaises(ValueError, msg=repr(bad)):
                meridian.Batch().expire_at("k", bad)
        for bad in ("1", True, None):
            with self.assertRaises(TypeError, msg=repr(bad)):
                e.expire("k", bad)
        self.assertIsNone(e.lww_get("k"), "nothing was written")
        with self.assertRaises(meridian.InvalidArgumentError):
            e.expire("", 1)
        with self.assertRaises(meridian.InvalidArgumentError):
            e.expires_at("")
        with self.assertRaises(meridian.InvalidArgumentError):
            e.map_apply("m", [], "lww_set", "v", ttl=1)
        e.lww_set("k", "v")
        with self.assertRaises(meridian.WrongTypeError):
            e.counter_add("k", 1, ttl=1)
        self.assertIsNone(e.expires_at("k"), "nothing of the refused write was applied")
        e.close()
        with self.assertRaises(meridian.ClosedError):
            e.expires_at("k")
        with self.assertRaises(meridian.ClosedError):
            e.lww_set("k", "v", ttl=1)


class ChangeFeeds(unittest.TestCase):
    """An embedded engine's change feed: the changes under a prefix after a position."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.engine = meridian.Engine.open(self.dir.name)

    def tearDown(self):
        self.engine.close()
        self.dir.cleanup()

    def test_a_feed_hands_out_each_change_under_its_prefix_with_the_latest_value(self):
        e = self.engine
        with e.feed("feed:") as feed:
            started = time.monotonic()
            self.assertIsNone(feed.next(0.2), "nothing was written")
            self.assertGreaterEqual(time.monotonic() - started, 0.15)
            self.assertIsNone(feed.next(0))
            start = feed.position
            e.lww_set("feed:a", "1")
            first = feed.next(2)
            self.assertEqual(first.key, b"feed:a")
            self.assertEqual(first.values, [{"lww": "1"}])
            self.assertFalse(first.deleted or first.reset)
            self.assertIsInstance(first.token, meridian.Token)
            e.lww_set("other", "outside the prefix")
            e.counter_add("feed:b", 2)
            e.counter_add("feed:b", 3)
            e.delete("feed:a")
            e.lww_set(b"feed:\xff", b"\x00\xff")
            b = feed.next(2)
            self.assertEqual((b.key, b.values), (b"feed:b", [{"counter": 5}]))
            # The position covers the events handed out, not those still to come.
            mid = feed.position
            deleted = feed.next(2)
            self.assertEqual((deleted.key, deleted.values, deleted.deleted), (b"feed:a", [], True))
            binary = feed.next(2)
            self.assertEqual((binary.key, binary.values), (b"feed:\xff", [{"lww": {"hex": "00ff"}}]))
            self.assertIsNone(feed.next(0.1))
            end = feed.position
            feed.ack()  # an unnamed feed: nothing to do
        with self.assertRaises(meridian.ClosedError):
            feed.next(0)

        def keys(from_token, prefix="feed:"):
            with e.feed(prefix, from_token=from_token) as f:
                out = []
                while True:
                    event = f.next(0.3)
                    if event is None:
                        return out
                    out.append(event.key)

        # A token resumes after its event, in any feed; a position after what was handed out.
        self.assertEqual(keys(first.token), [b"feed:b", b"feed:a", b"feed:\xff"])
        self.assertEqual(keys(meridian.Token.from_bytes(b.token.to_bytes())), [b"feed:a", b"feed:\xff"])
        self.assertEqual(keys(mid), [b"feed:a", b"feed:\xff"])
        self.assertEqual(keys(end), [])
        self.assertEqual(keys(start, prefix=b""), [b"other", b"feed:b", b"feed:a", b"feed:\xff"])

    def test_iterating_a_feed_waits_for_each_event(self):
        import threading
        e = self.engine
        with e.feed("it:") as feed:
            writer = threading.Timer(0.3, lambda: [e.lww_set(f"it:{i}", "x") for i in range(3)])
            writer.start()
            got = []
            for event in feed:
                got.append(event.key)
                if len(got) == 3:
                    break
            writer.join()
        self.assertEqual(got, [b"it:0", b"it:1", b"it:2"])

    def test_a_named_feed_resumes_after_its_acknowledged_position(self):
        e = self.engine
        with e.feed("n:", name="orders") as feed:
            e.lww_set("n:1", "a")
            self.assertEqual(feed.next(2).key, b"n:1")
            feed.ack()
            e.lww_set("n:2", "b")
        with e.feed("n:", name="orders") as feed:
            self.assertEqual(feed.next(2).key, b"n:2")
            self.assertIsNone(feed.next(0.1))
            feed.ack(feed.position)
        e.lww_set("n:3", "c")
        with e.feed("n:", name="orders") as feed:
            self.assertEqual(feed.next(2).key, b"n:3")

    def test_bad_feed_arguments_and_closed_handles_are_refused(self):
        e = self.engine
        with self.assertRaises(ValueError):
            e.feed(name="")
        with self.assertRaises(ValueError):
            e.feed(name="n" * 257)
        e.feed(name="n" * 256).close()
        with self.assertRaises(ValueError):
            e.feed(name="a\0b")
        with self.assertRaises(TypeError):
            e.feed(name=7)
        with self.assertRaises(TypeError):
            e.feed(from_token=b"not a token")
        with self.assertRaises(ValueError):
            e.feed(b"k" * 70_000)
        feed = e.feed()
        with self.assertRaises(ValueError):
            feed.next(-1)
        feed.close()
        feed.close()  # closing twice is fine
        with self.assertRaises(meridian.ClosedError):
            feed.position
        self.assertEqual(list(feed), [], "a closed feed's iteration ends")
        # A feed of a closed engine is refused; the engine's directory opens again.
        d = tempfile.TemporaryDirectory()
        other = meridian.Engine.open(d.name)
        open_feed = other.feed()
        other.close()
        with self.assertRaises(meridian.ClosedError):
            open_feed.next(0)
        again = meridian.Engine.open(d.name)
        again.close()
        open_feed.close()
        d.cleanup()

    def test_a_feed_keeps_its_engine_open(self):
        import gc
        d = tempfile.TemporaryDirectory()
        feed = meridian.Engine.open(d.name).feed()
        gc.collect()
        self.assertIsNone(feed.next(0))
        feed.close()
        del feed
        gc.collect()
        d.cleanup()

    def test_waiting_for_a_feed_is_interrupted_by_ctrl_c(self):
        import signal

        def interrupt(*_):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        started = time.monotonic()
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with self.engine.feed("never:") as feed:
                with self.assertRaises(KeyboardInterrupt):
                    for _ in feed:
                        pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        self.assertLess(time.monotonic() - started, 5, "the wait was not interrupted")


class RoutedWatch(unittest.TestCase):
    """A watch through a routed client of two ``meridian node`` processes: the changes another
    client writes, a named feed acknowledged and resumed, and a failover when the watch's
    region stops."""

    def test_a_watch_sees_another_clients_writes_and_fails_over(self):
        with tempfile.TemporaryDirectory() as d:
            regions = [("euw1", "eu-west"), ("use1", "us-east")]
            certs(os.path.join(d, "certs"), "pyw", regions, ["t"])
            ports = [free_port(), free_port()]
            places = [(53.3, -6.3), (39.0, -77.5)]
            nodes = [(n, r, p) for (n, r), p in zip(regions, ports)]
            configs = [node_config(d, "pyw", nodes[i], [nodes[1 - i]], places[i]) for i in range(2)]
            procs = []
            try:
                for c in configs:
                    procs.append(subprocess.Popen([BIN, "node", "--config", c], stdout=subprocess.PIPE,
                                                  stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"}))
                for p in procs:
                    self.assertIn(b"listening on", p.stdout.readline())
                cluster = os.path.join(d, "client.toml")
                with open(cluster, "w") as f:
                    f.write('cluster = "pyw"\ncerts = "certs/client-t"\nclient = "t"\n'
                            "near = { latitude = 48.85, longitude = 2.35 }\n")
                    for (n, r, p), (lat, lon) in zip(nodes, places):
                        f.write(f'[[seeds]]\nname = "{n}"\nregion = "{r}"\naddress = "127.0.0.1:{p}"\n'
                                f"location = {{ latitude = {lat}, longitude = {lon} }}\n")
                with meridian.Client(cluster) as watcher, meridian.Client(cluster) as writer:
                    deadline = time.time() + 20
                    while True:  # until the two regions are linked and eu-west, nearest, answers
                        try:
                            writer.lww_set("ready", "1", consistency="all")
                            if writer.region == "eu-west":
                                break
                        except meridian.MeridianError:
                            pass
                        self.assertLess(time.time(), deadline, "the regions never linked")
                        time.sleep(0.2)

                    def wait_for(feed, key, seconds=20):
                        """Events until one of ``key`` (at least once: some may repeat)."""
                        seen = []
                        end = time.time() + seconds
                        while time.time() < end:
                            event = feed.next(1.0)
                            if event is not None:
                                seen.append(event)
                                if event.key == key:
                                    return event, seen
                        self.fail(f"no event of {key!r} within {seconds} s: {[e.key for e in seen]}")

                    with watcher.watch("w:") as feed:
                        self.assertIsNone(feed.next(0.2))
                        writer.lww_set("w:1", "a")
                        writer.lww_set("elsewhere", "x")
                        writer.counter_add("w:2", 3)
                        event, seen = wait_for(feed, b"w:2")
                        self.assertEqual([e.key for e in seen], [b"w:1", b"w:2"])
                        self.assertEqual(seen[0].values, [{"lww": "a"}])
                        self.assertEqual(event.values, [{"counter": 3}])
                        position = feed.position
                    # Resumed from a position: what came after it only.
                    writer.delete("w:1")
                    with watcher.watch(b"w:", from_token=position) as feed:
                        event, seen = wait_for(feed, b"w:1")
                        self.assertTrue(event.deleted)
                        self.assertEqual([e.key for e in seen], [b"w:1"])

                    # A named feed: acknowledged, closed, resumed after its position.
                    with watcher.watch("n:", name="py-consumer") as feed:
                        writer.lww_set("n:1", "a")
                        wait_for(feed, b"n:1")
                        feed.ack()
                    writer.lww_set("n:2", "b")
                    with watcher.watch("n:", name="py-consumer") as feed:
                        event, seen = wait_for(feed, b"n:2")
                        self.assertEqual([e.key for e in seen], [b"n:2"])

                    # The watch's region stops: the watch goes on in the other one.
                    feed = watcher.watch("f:")
                    writer.lww_set("f:1", "a")
                    wait_for(feed, b"f:1")
                    procs[0].terminate()
                    procs[0].wait(10)
                    writer.lww_set("f:2", "b")
                    self.assertEqual(writer.region, "us-east")
                    event, _ = wait_for(feed, b"f:2", seconds=30)
                    self.assertEqual(event.values, [{"lww": "b"}])
                    feed.close()
                    # A closed client's watch is refused.
                    feed = watcher.watch("f:")
                watcher_closed = feed
                with self.assertRaises(meridian.ClosedError):
                    watcher_closed.next(0)
                watcher_closed.close()
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
                    p.stdout.close()


def varint(n):
    """A LEB128 varint (postcard's integers)."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data, i):
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def context_beyond(token, ahead):
    """The read context of a write ``ahead`` writes beyond the token's first entry (token
    bytes, format 1: the number of entries, then each origin and counter), as
    ffi/tests/c/client_threads.c makes it."""
    data = token.to_bytes()
    assert data[0] == 1, data
    entries, i = read_varint(data, 1)
    assert entries >= 1, data
    origin, i = read_varint(data, i)
    counter, i = read_varint(data, i)
    return bytes([1, 1]) + varint(origin) + varint(counter + ahead)


class InterruptedClientCalls(unittest.TestCase):
    """Ctrl-C during a client call that the cluster holds up: two regions' nodes run in this
    process (``Engine.open_node``); a register write whose read context names a million writes
    more of a live region's origin is held in each region (most of a second) before it is
    refused, as in ffi/tests/c/client_threads.c."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        d = cls.dir.name
        regions = [("euw1", "eu-west"), ("use1", "us-east")]
        certs(os.path.join(d, "certs"), "intr", regions, ["t"])
        cls.engines = []
        for attempt in range(5):  # a port taken meanwhile by another process: new ports
            nodes = [(n, r, free_port()) for n, r in regions]
            configs = [node_config(d, "intr", nodes[i], [nodes[1 - i]]) for i in range(2)]
            try:
                for c in configs:
                    cls.engines.append(meridian.Engine.open_node(c))
                break
            except meridian.MeridianError:
                for e in cls.engines:
                    e.close()
                cls.engines = []
                if attempt == 4:
                    raise
        cls.cluster = os.path.join(d, "client.toml")
        with open(cls.cluster, "w") as f:
            f.write('cluster = "intr"\ncerts = "certs/client-t"\nclient = "t"\n')
            for n, r, p in nodes:
                f.write(f'[[seeds]]\nname = "{n}"\nregion = "{r}"\naddress = "127.0.0.1:{p}"\n')

    @classmethod
    def tearDownClass(cls):
        for e in cls.engines:
            e.close()
        cls.dir.cleanup()

    def setUp(self):
        import signal
        # Ctrl-C as Python handles it by default: KeyboardInterrupt in the main thread.
        self.previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)

    def tearDown(self):
        import signal
        signal.signal(signal.SIGINT, self.previous_handler)

    def instrument(self, name, before=None):
        """Replaces ``meridian._lib.<name>`` (until the test ends) with a wrapper noting when
        the C call starts and when it has returned (in a ``finally``: set even when
        KeyboardInterrupt is raised as the call returns on the main thread)."""
        import threading
        real = getattr(meridian._lib, name)
        started, returned, outcome = threading.Event(), threading.Event(), []

        def wrapper(*args):
            started.set()
            try:
                if before:
                    before()
                status = real(*args)
                outcome.append((status, args))
                return status
            finally:
                returned.set()

        setattr(meridian._lib, name, wrapper)
        self.addCleanup(setattr, meridian._lib, name, real)
        return started, returned, outcome

    @staticmethod
    def ctrl_c_once(started):
        """A timer thread: about 200 ms after ``started``, SIGINT (raised on that thread:
        Python's handler then flags the main thread, which notices when it next runs)."""
        import signal
        import threading

        def fire():
            if started.wait(30):
                time.sleep(0.2)
                signal.raise_signal(signal.SIGINT)

        timer = threading.Thread(target=fire, daemon=True)
        timer.start()
        return timer

    def test_ctrl_c_interrupts_a_call_the_regions_hold_up(self):
        client = meridian.Client(self.cluster)
        first = client.lww_set("first", "1")
        context = context_beyond(first, 1_000_000)
        started, returned, outcome = self.instrument("meridian_client_register_put")
        timer = self.ctrl_c_once(started)
        try:
            client.put("held", "v", context=context)
        except KeyboardInterrupt:
            returned_before_interrupt = returned.is_set()
        else:
            self.fail("the held-up write returned and no KeyboardInterrupt came")
        timer.join()
        self.assertTrue(started.is_set())
        self.assertFalse(returned_before_interrupt,
                         "KeyboardInterrupt came only when the held-up call returned")
        # The client still works (the held-up call goes on in the background meanwhile).
        self.assertEqual(client.lww_get("first"), b"1")
        client.lww_set("after", "2")
        self.assertEqual(client.lww_get("after"), b"2")
        # The interrupted call ran to its end: refused, as held-up writes are (so the
        # hold was real), and nothing was written.
        self.assertTrue(returned.wait(60), "the held-up call never returned")
        self.assertEqual([status for status, _ in outcome], [12], "MERIDIAN_NOT_YET_VISIBLE")
        self.assertIsNone(client.lww_get("held"))
        client.close()

    def test_an_interrupted_write_that_lands_frees_its_token(self):
        import threading
        client = meridian.Client(self.cluster)
        release = threading.Event()
        # The write itself waits (on the thread running it) until the interrupt was raised.
        started, returned, outcome = self.instrument("meridian_client_lww_set",
                                                     before=lambda: release.wait(30))
        real_free = meridian._lib.meridian_token_free
        freed = []

        def free(handle):
            freed.append(handle)
            return real_free(handle)

        meridian._lib.meridian_token_free = free
        self.addCleanup(setattr, meridian._lib, "meridian_token_free", real_free)
        timer = self.ctrl_c_once(started)
        try:
            client.lww_set("landed", "v")
        except KeyboardInterrupt:
            returned_before_interrupt = returned.is_set()
        else:
            self.fail("no KeyboardInterrupt came")
        finally:
            release.set()
        timer.join()
        self.assertFalse(returned_before_interrupt)
        self.assertTrue(returned.wait(30))
        [(status, args)] = outcome
        self.assertEqual(status, 0)
        handed_out = args[-1]._obj.value  # byref(c_void_p): the token the library handed out
        self.assertTrue(handed_out)
        deadline = time.monotonic() + 30  # (a bound for a failure, not a timing check)
        while handed_out not in freed and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertIn(handed_out, freed, "the dropped call's token was never freed")
        self.assertEqual(client.lww_get("landed"), b"v", "the interrupted write applied")
        client.close()

    def test_an_interpreter_exits_without_waiting_for_an_interrupted_call(self):
        # A script that interrupts a held-up write and ends: an atexit function (run after
        # the interpreter joined its non-daemon threads) says whether the call had returned.
        code = f"""
import atexit, signal, sys, threading, time
sys.path.insert(0, {os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')!r})
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import meridian
from test_meridian import context_beyond
returned = threading.Event()
real = meridian._lib.meridian_client_register_put
def held(*args):
    try:
        return real(*args)
    finally:
        returned.set()
meridian._lib.meridian_client_register_put = held
atexit.register(lambda: print("returned" if returned.is_set() else "pending", flush=True))
client = meridian.Client({self.cluster!r})
context = context_beyond(client.lww_set("first", "1"), 1_000_000)
threading.Timer(0.2, signal.raise_signal, (signal.SIGINT,)).start()
try:
    client.put("held", "v", context=context)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertEqual(done.stdout.decode().split(), ["interrupted", "pending"],
                         done.stderr.decode())


class InterpreterExit(unittest.TestCase):
    def test_no_crash_when_the_interpreter_exits_with_handles_open(self):
        with tempfile.TemporaryDirectory() as d:
            code = ("import meridian; e = meridian.Engine.open(%r); t = e.lww_set('k', 'v'); "
                    "s = e.scan(); next(s); b = meridian.Batch().counter_add('n', 1)") % d
            env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")}
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
            self.assertEqual(done.returncode, 0, done.stderr.decode())
            # The data was flushed and the directory reopens.
            with meridian.Engine.open(d) as e:
                self.assertEqual(e.lww_get("k"), b"v")


if __name__ == "__main__":
    unittest.main()
