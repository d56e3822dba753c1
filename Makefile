# The two commands a newcomer needs: `make demo` and `make test`.
# Builds share one target directory outside the clone so that RocksDB (about 10 minutes cold on
# two cores) is compiled once per machine; override with CARGO_TARGET_DIR.
CARGO_TARGET_DIR ?= $(HOME)/.cache/meridian/target
export CARGO_TARGET_DIR
CARGO ?= cargo

.PHONY: api c-libs python-wheel deps demo test test-checked power-cut bench sim lint fuzz bench-scale outage header cart-cluster example-cart example-cart-c example-cart-python example-fanout example-fanout-python example-cache-aside example-cache-aside-python

deps:
	@bash scripts/install-deps.sh

# The lab (`meridian-lab`: demo, benchmarks, outage suite, simulator) runs the `meridian` daemon
# built beside it.
LAB = $(CARGO_TARGET_DIR)/release/meridian-lab
BUILD_LAB = $(CARGO) build --release --quiet -p meridian-node -p meridian-lab

demo: deps
	$(BUILD_LAB)
	$(LAB) demo

test: deps
	$(CARGO) build --release -p meridian-ffi
	ln -sf libmeridian.so $(CARGO_TARGET_DIR)/release/libmeridian.so.1
	$(CARGO) test --release --workspace
	MERIDIAN_LIB=$(CARGO_TARGET_DIR)/release/libmeridian.so MERIDIAN_BIN=$(CARGO_TARGET_DIR)/release/meridian \
	  bash scripts/python-tests.sh
	bash scripts/python-wheel-test.sh $(CARGO_TARGET_DIR)/release/libmeridian.so
	bash scripts/public-api.sh

# The Rust suite with debug assertions and overflow checks on (its own build: RocksDB again).
test-checked: deps
	$(CARGO) test --profile checked --workspace --exclude meridian-ffi

# Power cuts on a real disk (ext4 on a loop device; needs root): acknowledged writes under
# `sync` all kept, under `wal` a new epoch and an applied vector that covers only what was kept.
power-cut: deps
	$(CARGO) test --release -p meridian-tests --test power_cut -- --ignored --test-threads=1 --nocapture

# Regenerates ffi/include/meridian.h from the C ABI (make test fails while it is stale).
header:
	MERIDIAN_WRITE_HEADER=1 $(CARGO) test --release -p meridian-ffi --test header

bench: deps
	$(BUILD_LAB)
	$(CARGO) build --release -p meridian-ffi
	$(LAB) bench all

sim: deps
	$(BUILD_LAB)
	$(LAB) sim --seeds 2000

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	bash scripts/public-api.sh

# The meridian crate's public API against engine/public-api.txt (`--bless` after a change
# made on purpose).
api: deps
	bash scripts/public-api.sh

# Long forms: fuzz every decoder for FUZZ_SECONDS each (nightly + cargo-fuzz), state transfer
# at 1M and 10M records.
FUZZ_SECONDS ?= 60
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

# The region-outage suite's long form: every outage for 30 s under heavier load, the table
# printed and written as JSON (the fast form runs in `make test`).
outage: deps
	$(BUILD_LAB)
	$(LAB) outage --long --json $(CARGO_TARGET_DIR)/outage-report.json

bench-scale: deps
	$(BUILD_LAB)
	$(LAB) bench scale

# The multi-region shopping cart, in Rust, C and Python: three embedded engines replicating over
# QUIC on loopback, in a cluster directory `meridian local-cluster` writes.
CART_DIR = $(CARGO_TARGET_DIR)/cart-example
cart-cluster: deps
	$(CARGO) build --release -p meridian-node -p meridian-ffi -p cart
	rm -rf $(CART_DIR)
	$(CARGO_TARGET_DIR)/release/meridian local-cluster --dir $(CART_DIR) \
	  --replica use1:us-east --replica euw1:eu-west --replica apn1:ap-northeast >/dev/null

example-cart: cart-cluster
	RUST_LOG=error $(CARGO_TARGET_DIR)/release/cart $(CART_DIR)

example-cart-c: cart-cluster
	ln -sf libmeridian.so $(CARGO_TARGET_DIR)/release/libmeridian.so.1
	cc -std=c11 -Wall -Wextra -Werror -I ffi/include examples/cart/cart.c -o $(CARGO_TARGET_DIR)/cart-c \
	  -L $(CARGO_TARGET_DIR)/release -lmeridian -Wl,-rpath,$(CARGO_TARGET_DIR)/release
	RUST_LOG=error $(CARGO_TARGET_DIR)/cart-c $(CART_DIR)

# The C libraries as a host links them, with the header, in $(CARGO_TARGET_DIR)/dist: the shared
# library under its SONAME, and the static one whose only global symbols are meridian_*.
c-libs: deps
	$(CARGO) build --release -p meridian-ffi
	mkdir -p $(CARGO_TARGET_DIR)/dist
	cp ffi/include/meridian.h $(CARGO_TARGET_DIR)/release/libmeridian.so $(CARGO_TARGET_DIR)/dist/
	ln -sf libmeridian.so $(CARGO_TARGET_DIR)/dist/libmeridian.so.1
	bash scripts/localize-static.sh $(CARGO_TARGET_DIR)/release/libmeridian.a $(CARGO_TARGET_DIR)/dist/libmeridian.a

# The Python package as a wheel with libmeridian.so inside: `pip install` it, no variable needed.
python-wheel: deps
	$(CARGO) build --release -p meridian-ffi
	python3 scripts/python-wheel.py $(CARGO_TARGET_DIR)/release/libmeridian.so $(CARGO_TARGET_DIR)/wheels

# Fan-out from a change feed, in Rust and Python: a derived view (items per category) kept from
# the feed, de-duplicated, resumed in another region when its region fails.
example-fanout: cart-cluster
	$(CARGO) build --release -p fanout
	RUST_LOG=error $(CARGO_TARGET_DIR)/release/fanout $(CART_DIR)

example-fanout-python: cart-cluster
	RUST_LOG=error MERIDIAN_LIB=$(CARGO_TARGET_DIR)/release/libmeridian.so python3 examples/fanout/fanout.py $(CART_DIR)

# Cache-aside, in Rust and Python: a slow source cached in Meridian with a TTL, an in-process
# cache per region kept fresh by a change feed, an update's invalidation reaching every region.
example-cache-aside: cart-cluster
	$(CARGO) build --release -p cache-aside
	RUST_LOG=error $(CARGO_TARGET_DIR)/release/cache-aside $(CART_DIR)

example-cache-aside-python: cart-cluster
	RUST_LOG=error MERIDIAN_LIB=$(CARGO_TARGET_DIR)/release/libmeridian.so python3 examples/cache-aside/cache_aside.py $(CART_DIR)

example-cart-python: cart-cluster
	RUST_LOG=error MERIDIAN_LIB=$(CARGO_TARGET_DIR)/release/libmeridian.so python3 examples/cart/cart.py $(CART_DIR)
