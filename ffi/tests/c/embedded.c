/* Every function of the embedded C ABI, with good and bad arguments; run under
 * AddressSanitizer by ffi/tests/c_program.rs. Prints "ok" and exits 0 when every check holds. */
#include "meridian.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, meridian_last_error());                                     \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

#define B(s) ((const uint8_t *)(s))

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The wall clock in milliseconds since the Unix epoch (what expiry times are in). */
static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A token wait on another thread, while the engine is closed. */
struct Wait {
    MeridianEngine *engine;
    MeridianToken *token;
    MeridianStatus status;
    int covered;
};

static void *wait_on_engine(void *arg) {
    struct Wait *w = arg;
    w->status = meridian_wait_covers(w->engine, w->token, 1500, &w->covered);
    return NULL;
}

/* Calls from a thread-exit destructor (after the library's thread-locals are gone) are
 * refused with MERIDIAN_UNAVAILABLE, doing nothing; they never abort the process. */
static MeridianEngine *g_engine;
static MeridianStatus g_from_destructor = MERIDIAN_OK;

static void on_thread_exit(void *arg) {
    (void)arg;
    MeridianBuffer b = {0};
    g_from_destructor = meridian_lww_get(g_engine, B("missing"), 7, &b);
    (void)meridian_last_error();
}

/* An engine left open until exit: an atexit handler closing it is refused (the library's
 * thread-locals are gone by then), never aborts nor hangs; the process exits 0. */
static MeridianEngine *g_at_exit;

static void close_at_exit(void) {
    MeridianBuffer b = {0};
    if (meridian_lww_get(g_at_exit, B("k"), 1, &b) == MERIDIAN_OK) {
        meridian_buffer_free(&b);
    }
    (void)meridian_engine_close(g_at_exit);
}

static void *thread_with_destructor(void *arg) {
    (void)arg;
    pthread_key_t key;
    pthread_key_create(&key, on_thread_exit);
    pthread_setspecific(key, (void *)1);
    MeridianBuffer b = {0};
    (void)meridian_lww_get(g_engine, B("missing"), 7, &b); /* the thread-locals exist */
    return NULL;
}

/* The next event of a feed as a NUL-terminated JSON string in `out` (empty when none). */
static MeridianStatus next_event(MeridianFeed *feed, uint64_t timeout_ms, char *out, size_t cap) {
    MeridianBuffer ev = {0};
    MeridianStatus st = meridian_feed_next(feed, timeout_ms, &ev);
    out[0] = 0;
    if (st == MERIDIAN_OK) {
        size_t n = ev.len < cap - 1 ? ev.len : cap - 1;
        memcpy(out, ev.data, n);
        out[n] = 0;
        if (meridian_buffer_free(&ev) != MERIDIAN_OK) {
            return MERIDIAN_INTERNAL;
        }
    } else if (ev.data != NULL || ev.len != 0) {
        return MERIDIAN_INTERNAL; /* a failed call hands out nothing */
    }
    return st;
}

/* The token of an event's JSON (`"token":"hex"`), as a token handle (NULL when absent). */
static MeridianToken *event_token(const char *json) {
    const char *at = strstr(json, "\"token\":\"");
    if (at == NULL) {
        return NULL;
    }
    at += 9;
    uint8_t raw[1024];
    size_t n = 0;
    while (at[0] != '"' && at[1] != 0 && n < sizeof raw) {
        unsigned byte;
        if (sscanf(at, "%2x", &byte) != 1) {
            return NULL;
        }
        raw[n++] = (uint8_t)byte;
        at += 2;
    }
    MeridianToken *t = NULL;
    return meridian_token_from_bytes(raw, n, &t) == MERIDIAN_OK ? t : NULL;
}

/* A feed waiting for an event on another thread while its engine is closed. */
struct FeedWait {
    MeridianFeed *feed;
    MeridianStatus status;
    double took;
};

static void *wait_on_feed(void *arg) {
    struct FeedWait *w = arg;
    double started = now_s();
    MeridianBuffer ev = {0};
    w->status = meridian_feed_next(w->feed, 20000, &ev);
    w->took = now_s() - started;
    if (w->status == MERIDIAN_OK) {
        meridian_buffer_free(&ev);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    MeridianEngine *e = NULL;

    /* The library is the version the header describes. */
    {
        char expected[32];
        snprintf(expected, sizeof expected, "%d.%d.%d", MERIDIAN_VERSION_MAJOR,
                 MERIDIAN_VERSION_MINOR, MERIDIAN_VERSION_PATCH);
        CHECK(strcmp(meridian_version(), expected) == 0);
        CHECK(meridian_abi_version() == MERIDIAN_ABI_VERSION);
    }

    /* Opening: bad arguments are refused with a message. */
    CHECK(meridian_engine_open(NULL, &e) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(strlen(meridian_last_error()) > 0);
    CHECK(meridian_engine_open(dir, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_engine_open_node("/nonexistent/node.toml", &e) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_engine_open(dir, &e) == MERIDIAN_OK);
    CHECK(e != NULL);
    CHECK(strlen(meridian_last_error()) == 0);

    /* Last-writer-wins values. */
    MeridianToken *t1 = NULL;
    CHECK(meridian_lww_set(e, B("k"), 1, B("v1"), 2, &t1) == MERIDIAN_OK && t1 != NULL);
    MeridianBuffer b = {0};
    CHECK(meridian_lww_get(e, B("k"), 1, &b) == MERIDIAN_OK);
    CHECK(b.len == 2 && memcmp(b.data, "v1", 2) == 0);
    CHECK(meridian_buffer_free(&b) == MERIDIAN_OK && b.data == NULL && b.len == 0);
    CHECK(meridian_buffer_free(&b) == MERIDIAN_OK); /* emptied: freeing again is harmless */
    CHECK(meridian_buffer_free(NULL) == MERIDIAN_OK);
    CHECK(meridian_lww_get(e, B("missing"), 7, &b) == MERIDIAN_NOT_FOUND);
    CHECK(meridian_lww_get(e, B("k"), 1, NULL) == MERIDIAN_INVALID_ARGUMENT);

    /* Bad keys and values. */
    CHECK(meridian_lww_set(e, NULL, 0, B("v"), 1, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_lww_set(e, NULL, 3, B("v"), 1, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_lww_set(e, B("k"), 1, NULL, 5, NULL) == MERIDIAN_INVALID_ARGUMENT);
    size_t big_len = 5u << 20;
    uint8_t *big = calloc(big_len, 1);
    CHECK(big != NULL);
    CHECK(meridian_lww_set(e, B("big"), 3, big, big_len, NULL) == MERIDIAN_TOO_LARGE);
    free(big);
    /* Lengths are checked before a byte is read: an 8 MiB length over a 16-byte buffer (over
     * the engine's 4 MiB value limit) and a length of 2^44 are refused, reading nothing. */
    {
        uint8_t small[16] = {0};
        CHECK(meridian_lww_set(e, B("big"), 3, small, 8u << 20, NULL) == MERIDIAN_TOO_LARGE);
        CHECK(meridian_set_add(e, B("big"), 3, small, 8u << 20, NULL) == MERIDIAN_TOO_LARGE);
        CHECK(meridian_map_lww_set(e, B("big"), 3, small, 8u << 20, small, 1, NULL) == MERIDIAN_TOO_LARGE);
        CHECK(meridian_lww_set(e, B("big"), 3, small, (size_t)1 << 44, NULL) == MERIDIAN_TOO_LARGE);
        CHECK(meridian_lww_set(e, small, (size_t)1 << 44, small, 1, NULL) == MERIDIAN_INVALID_ARGUMENT);
        MeridianBatch *hb = NULL;
        CHECK(meridian_batch_new(&hb) == MERIDIAN_OK);
        CHECK(meridian_batch_lww_set(hb, small, (size_t)1 << 44, small, 1) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_lww_set(hb, B("k"), 1, small, (size_t)1 << 44) == MERIDIAN_TOO_LARGE);
        CHECK(meridian_batch_free(hb) == MERIDIAN_OK);
    }

    /* Counters, and a key of another type. */
    CHECK(meridian_counter_add(e, B("k"), 1, 1, NULL) == MERIDIAN_WRONG_TYPE);
    CHECK(meridian_counter_add(e, B("c"), 1, 5, NULL) == MERIDIAN_OK);
    CHECK(meridian_counter_add(e, B("c"), 1, -2, NULL) == MERIDIAN_OK);
    int64_t n = 0;
    CHECK(meridian_counter_get(e, B("c"), 1, &n) == MERIDIAN_OK && n == 3);
    CHECK(meridian_counter_get(e, B("c"), 1, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_counter_get(e, B("none"), 4, &n) == MERIDIAN_NOT_FOUND);

    /* Registers: siblings and the write-back context. */
    CHECK(meridian_register_put(e, B("r"), 1, B("a"), 1, NULL, 0, NULL) == MERIDIAN_OK);
    MeridianBuffer values = {0}, context = {0};
    CHECK(meridian_register_get(e, B("r"), 1, &values, &context) == MERIDIAN_OK);
    CHECK(values.len == 9 && values.data[0] == 1 && values.data[8] == 'a');
    CHECK(meridian_register_put(e, B("r"), 1, B("b"), 1, context.data, context.len, NULL) ==
          MERIDIAN_OK);
    CHECK(meridian_buffer_free(&values) == MERIDIAN_OK);
    CHECK(meridian_buffer_free(&context) == MERIDIAN_OK);
    CHECK(meridian_register_get(e, B("r"), 1, &values, &context) == MERIDIAN_OK);
    CHECK(values.len == 9 && values.data[8] == 'b'); /* the context superseded "a" */
    CHECK(meridian_buffer_free(&values) == MERIDIAN_OK);
    CHECK(meridian_buffer_free(&context) == MERIDIAN_OK);
    CHECK(meridian_register_put(e, B("r"), 1, B("x"), 1, B("\xff\xff"), 2, NULL) ==
          MERIDIAN_INVALID_ARGUMENT); /* a context that does not decode */
    CHECK(meridian_register_get(e, B("r"), 1, NULL, &context) == MERIDIAN_INVALID_ARGUMENT);

    /* Sets. */
    CHECK(meridian_set_add(e, B("s"), 1, B("pen"), 3, NULL) == MERIDIAN_OK);
    CHECK(meridian_set_add(e, B("s"), 1, B("book"), 4, NULL) == MERIDIAN_OK);
    CHECK(meridian_set_remove(e, B("s"), 1, B("pen"), 3, NULL) == MERIDIAN_OK);
    MeridianBuffer members = {0};
    CHECK(meridian_set_get(e, B("s"), 1, &members) == MERIDIAN_OK);
    CHECK(members.len == 12 && members.data[0] == 4 && memcmp(members.data + 8, "book", 4) == 0);
    CHECK(meridian_buffer_free(&members) == MERIDIAN_OK);
    CHECK(meridian_set_get(e, B("s"), 1, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_set_get(e, B("c"), 1, &members) == MERIDIAN_WRONG_TYPE); /* a counter */
    CHECK(meridian_set_add(e, B("s"), 1, NULL, 2, NULL) == MERIDIAN_INVALID_ARGUMENT);

    /* Maps: a cart of counters and a last-writer-wins field. */
    CHECK(meridian_map_counter_add(e, B("cart"), 4, B("apple"), 5, 2, NULL) == MERIDIAN_OK);
    CHECK(meridian_map_counter_add(e, B("cart"), 4, B("apple"), 5, 1, NULL) == MERIDIAN_OK);
    CHECK(meridian_map_lww_set(e, B("cart"), 4, B("note"), 4, B("gift"), 4, NULL) == MERIDIAN_OK);
    CHECK(meridian_map_get_counter(e, B("cart"), 4, B("apple"), 5, &n) == MERIDIAN_OK && n == 3);
    CHECK(meridian_map_get_lww(e, B("cart"), 4, B("note"), 4, &b) == MERIDIAN_OK);
    CHECK(b.len == 4 && memcmp(b.data, "gift", 4) == 0);
    CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
    CHECK(meridian_map_remove(e, B("cart"), 4, B("apple"), 5, NULL) == MERIDIAN_OK);
    CHECK(meridian_map_get_counter(e, B("cart"), 4, B("apple"), 5, &n) == MERIDIAN_NOT_FOUND);
    CHECK(meridian_map_get_lww(e, B("cart"), 4, B("note"), 4, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_map_get_counter(e, B("cart"), 4, B("note"), 4, &n) == MERIDIAN_NOT_FOUND);

    /* Nested maps: a path of fields, any operation at its end; a JSON read of anything. */
    const uint8_t path[] = {5, 0, 0, 0, 0, 0, 0, 0, 'i', 't', 'e', 'm', 's',
                            4, 0, 0, 0, 0, 0, 0, 0, 'p', 'l', 'u', 'm'};
    CHECK(meridian_map_apply(e, B("deep"), 4, path, sizeof path, MERIDIAN_OP_COUNTER_ADD, NULL, 0, 4,
                             NULL, 0, NULL) == MERIDIAN_OK);
    /* A field that holds a map takes no set operation. */
    CHECK(meridian_map_apply(e, B("deep"), 4, path, 13, MERIDIAN_OP_SET_ADD, B("x"), 1, 0, NULL, 0,
                             NULL) == MERIDIAN_WRONG_TYPE);
    CHECK(meridian_map_apply(e, B("deep"), 4, path, 13, MERIDIAN_OP_REMOVE_FIELD, NULL, 0, 0, NULL,
                             0, NULL) == MERIDIAN_OK);
    CHECK(meridian_map_apply(e, B("deep"), 4, path, 13, MERIDIAN_OP_SET_ADD, B("x"), 1, 0, NULL, 0,
                             NULL) == MERIDIAN_OK); /* once removed, the name takes a set */
    CHECK(meridian_map_apply(e, B("deep"), 4, path, sizeof path, MERIDIAN_OP_COUNTER_ADD, NULL, 0, 4,
                             NULL, 0, NULL) == MERIDIAN_WRONG_TYPE);
    CHECK(meridian_map_apply(e, B("deep2"), 5, path, sizeof path, MERIDIAN_OP_COUNTER_ADD, NULL, 0, 4,
                             NULL, 0, NULL) == MERIDIAN_OK);
    CHECK(meridian_map_apply(e, B("deep"), 4, path, 5, MERIDIAN_OP_LWW_SET, B("v"), 1, 0, NULL, 0,
                             NULL) == MERIDIAN_INVALID_ARGUMENT); /* a cut length */
    CHECK(meridian_map_apply(e, B("deep"), 4, NULL, 0, MERIDIAN_OP_LWW_SET, B("v"), 1, 0, NULL, 0,
                             NULL) == MERIDIAN_INVALID_ARGUMENT); /* no field */
    /* An operation kind outside the enum is refused, writing nothing. */
    CHECK(meridian_map_apply(e, B("deep3"), 5, path, sizeof path, 42, B("v"), 1, 0, NULL, 0,
                             NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_map_apply(e, B("deep3"), 5, path, sizeof path, -1, B("v"), 1, 0, NULL, 0,
                             NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_read_json(e, B("deep3"), 5, &b) == MERIDIAN_NOT_FOUND);
    {
        char json[512] = {0};
        CHECK(meridian_read_json(e, B("deep2"), 5, &b) == MERIDIAN_OK && b.len < sizeof json);
        memcpy(json, b.data, b.len);
        CHECK(strstr(json, "\"plum\":[{\"counter\":4}]") != NULL);
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
        memset(json, 0, sizeof json);
        CHECK(meridian_read_json(e, B("deep"), 4, &b) == MERIDIAN_OK && b.len < sizeof json);
        memcpy(json, b.data, b.len);
        CHECK(strstr(json, "\"items\":[{\"set\":[\"x\"]}]") != NULL);
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
    }
    CHECK(meridian_read_json(e, B("nothing"), 7, &b) == MERIDIAN_NOT_FOUND);
    CHECK(meridian_read_json(e, B("deep"), 4, NULL) == MERIDIAN_INVALID_ARGUMENT);

    /* Batches: all or nothing. */
    MeridianBatch *batch = NULL;
    CHECK(meridian_batch_new(&batch) == MERIDIAN_OK);
    CHECK(meridian_batch_lww_set(batch, B("b1"), 2, B("x"), 1) == MERIDIAN_OK);
    CHECK(meridian_batch_counter_add(batch, B("b2"), 2, 7) == MERIDIAN_OK);
    CHECK(meridian_batch_set_add(batch, B("b3"), 2, B("y"), 1) == MERIDIAN_OK);
    CHECK(meridian_batch_delete(batch, B("s"), 1) == MERIDIAN_OK);
    MeridianToken *bt = NULL;
    {
        /* Packed operations: a counter increment of 5 on "pk", then one of kind 9 (refused:
         * nothing of the call is added), then a cut one. */
        const uint8_t good[] = {1, 2, 0, 0, 0, 0, 0, 0, 0, 'p', 'k', 5, 0, 0, 0, 0, 0, 0, 0};
        uint8_t bad[sizeof good + 11];
        memcpy(bad, good, sizeof good);
        const uint8_t nine[] = {9, 2, 0, 0, 0, 0, 0, 0, 0, 'p', 'k'};
        memcpy(bad + sizeof good, nine, sizeof nine);
        CHECK(meridian_batch_add_packed(batch, bad, sizeof bad) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_add_packed(batch, good, sizeof good - 1) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_add_packed(batch, good, sizeof good) == MERIDIAN_OK);
    }
    CHECK(meridian_batch_commit(e, batch, &bt) == MERIDIAN_OK && bt != NULL);
    CHECK(meridian_counter_get(e, B("pk"), 2, &n) == MERIDIAN_OK && n == 5);
    CHECK(meridian_counter_get(e, B("b2"), 2, &n) == MERIDIAN_OK && n == 7);
    CHECK(meridian_set_get(e, B("s"), 1, &members) == MERIDIAN_NOT_FOUND);
    CHECK(meridian_batch_counter_add(batch, B("b1"), 2, 1) == MERIDIAN_OK); /* b1 is LWW */
    CHECK(meridian_batch_commit(e, batch, NULL) == MERIDIAN_WRONG_TYPE);
    CHECK(meridian_counter_get(e, B("b1"), 2, &n) == MERIDIAN_WRONG_TYPE); /* nothing written */
    CHECK(meridian_batch_lww_set(batch, NULL, 1, B("x"), 1) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_batch_free(batch) == MERIDIAN_OK);
    CHECK(meridian_batch_free(batch) == MERIDIAN_CLOSED);
    CHECK(meridian_batch_commit(e, batch, NULL) == MERIDIAN_CLOSED);
    CHECK(meridian_token_free(bt) == MERIDIAN_OK);

    /* Expiry: a write with a TTL (a batch holding the write and its TTL, in any order) is
     * read until its time, then not; a write without a TTL keeps the pending expiry; persist
     * removes it; a write after expiry starts afresh. */
    {
        uint64_t before = wall_ms();
        MeridianBatch *tb = NULL;
        CHECK(meridian_batch_new(&tb) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("ttl:v"), 5, 1500) == MERIDIAN_OK); /* before its write */
        CHECK(meridian_batch_lww_set(tb, B("ttl:v"), 5, B("soon"), 4) == MERIDIAN_OK);
        CHECK(meridian_batch_counter_add(tb, B("ttl:c"), 5, 5) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("ttl:c"), 5, 1500) == MERIDIAN_OK);
        /* Any write goes in a batch: a register write on the key itself (no path). */
        CHECK(meridian_batch_apply(tb, B("ttl:r"), 5, NULL, 0, MERIDIAN_OP_REGISTER_PUT, B("r"), 1, 0,
                                   NULL, 0) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("ttl:r"), 5, 1500) == MERIDIAN_OK);
        CHECK(meridian_batch_lww_set(tb, B("ttl:kept"), 8, B("kept"), 4) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("ttl:kept"), 8, 1500) == MERIDIAN_OK);
        CHECK(meridian_batch_lww_set(tb, B("ttl:at"), 6, B("at"), 2) == MERIDIAN_OK);
        CHECK(meridian_batch_expire_at(tb, B("ttl:at"), 6, before + 1500) == MERIDIAN_OK);
        CHECK(meridian_batch_lww_set(tb, B("ttl:p"), 5, B("p"), 1) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("ttl:p"), 5, 1500) == MERIDIAN_OK);
        CHECK(meridian_batch_persist(tb, B("ttl:p"), 5) == MERIDIAN_OK); /* in the same batch */
        MeridianToken *ttl_token = NULL;
        CHECK(meridian_batch_commit(e, tb, &ttl_token) == MERIDIAN_OK && ttl_token != NULL);
        CHECK(meridian_token_free(ttl_token) == MERIDIAN_OK);
        uint64_t after = wall_ms();

        /* Read back before their time. */
        CHECK(meridian_lww_get(e, B("ttl:v"), 5, &b) == MERIDIAN_OK);
        CHECK(b.len == 4 && memcmp(b.data, "soon", 4) == 0);
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
        CHECK(meridian_counter_get(e, B("ttl:c"), 5, &n) == MERIDIAN_OK && n == 5);
        CHECK(meridian_register_get(e, B("ttl:r"), 5, &values, &context) == MERIDIAN_OK);
        CHECK(meridian_buffer_free(&values) == MERIDIAN_OK);
        CHECK(meridian_buffer_free(&context) == MERIDIAN_OK);
        uint64_t at = 0;
        CHECK(meridian_expires_at(e, B("ttl:v"), 5, &at) == MERIDIAN_OK);
        CHECK(at >= before + 1500 && at <= after + 1500);
        uint64_t counter_at = 0;
        CHECK(meridian_expires_at(e, B("ttl:c"), 5, &counter_at) == MERIDIAN_OK && counter_at == at);
        CHECK(meridian_expires_at(e, B("ttl:at"), 6, &at) == MERIDIAN_OK && at == before + 1500);
        CHECK(meridian_expires_at(e, B("ttl:p"), 5, &at) == MERIDIAN_NOT_FOUND && at == 0);
        CHECK(meridian_expires_at(e, B("missing"), 7, &at) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_expires_at(e, B("b1"), 2, &at) == MERIDIAN_NOT_FOUND); /* no expiry */

        /* A write without a TTL keeps the pending expiry (and is covered by it). */
        CHECK(meridian_counter_add(e, B("ttl:c"), 5, 1, NULL) == MERIDIAN_OK);
        CHECK(meridian_counter_get(e, B("ttl:c"), 5, &n) == MERIDIAN_OK && n == 6);
        CHECK(meridian_expires_at(e, B("ttl:c"), 5, &at) == MERIDIAN_OK && at == counter_at);
        /* Persist removes it. */
        MeridianToken *pt = NULL;
        CHECK(meridian_persist(e, B("ttl:kept"), 8, &pt) == MERIDIAN_OK && pt != NULL);
        CHECK(meridian_token_free(pt) == MERIDIAN_OK);
        CHECK(meridian_expires_at(e, B("ttl:kept"), 8, &at) == MERIDIAN_NOT_FOUND);
        /* Expire on a key that had no expiry; on an absent key it changes nothing. */
        CHECK(meridian_lww_set(e, B("ttl:e"), 5, B("e"), 1, NULL) == MERIDIAN_OK);
        MeridianToken *et = NULL;
        uint64_t e_before = wall_ms();
        CHECK(meridian_expire(e, B("ttl:e"), 5, 1000, &et) == MERIDIAN_OK && et != NULL);
        CHECK(meridian_token_free(et) == MERIDIAN_OK);
        CHECK(meridian_expires_at(e, B("ttl:e"), 5, &at) == MERIDIAN_OK);
        CHECK(at >= e_before + 1000 && at <= wall_ms() + 1000);
        uint64_t latest = at > counter_at ? at : counter_at;
        CHECK(meridian_expire(e, B("ttl:absent"), 10, 1000, NULL) == MERIDIAN_OK);
        CHECK(meridian_expires_at(e, B("ttl:absent"), 10, &at) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_lww_get(e, B("ttl:absent"), 10, &b) == MERIDIAN_NOT_FOUND);
        /* A far expiry, then persist: kept. */
        CHECK(meridian_lww_set(e, B("ttl:far"), 7, B("f"), 1, NULL) == MERIDIAN_OK);
        CHECK(meridian_expire_at(e, B("ttl:far"), 7, MERIDIAN_EXPIRY_MS_MAX, NULL) == MERIDIAN_OK);
        CHECK(meridian_expires_at(e, B("ttl:far"), 7, &at) == MERIDIAN_OK && at == MERIDIAN_EXPIRY_MS_MAX);

        /* Bad arguments: refused, nothing written, out-parameters cleared. */
        MeridianToken *tj = (MeridianToken *)(uintptr_t)0x1;
        CHECK(meridian_expire(NULL, B("ttl:v"), 5, 10, &tj) == MERIDIAN_INVALID_ARGUMENT && tj == NULL);
        CHECK(meridian_expire(e, NULL, 5, 10, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_expire(e, B("ttl:v"), 5, MERIDIAN_EXPIRY_MS_MAX + 1, NULL) ==
              MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_expire(e, B("ttl:v"), 5, UINT64_MAX, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_expire_at(NULL, B("ttl:v"), 5, 10, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_expire_at(e, NULL, 1, 10, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_expire_at(e, B("ttl:v"), 5, UINT64_MAX, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_persist(NULL, B("ttl:v"), 5, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_persist(e, NULL, 5, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_persist(e, NULL, 0, NULL) == MERIDIAN_INVALID_ARGUMENT); /* an empty key */
        at = 77;
        CHECK(meridian_expires_at(e, B("ttl:v"), 5, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_expires_at(NULL, B("ttl:v"), 5, &at) == MERIDIAN_INVALID_ARGUMENT && at == 0);
        CHECK(meridian_expires_at(e, NULL, 5, &at) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_new(&tb) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(NULL, B("k"), 1, 10) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_ttl(tb, NULL, 1, 10) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_ttl(tb, B("k"), 1, MERIDIAN_EXPIRY_MS_MAX + 1) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_expire_at(NULL, B("k"), 1, 10) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_expire_at(tb, B("k"), 1, UINT64_MAX) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_persist(NULL, B("k"), 1) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_persist(tb, NULL, 1) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_apply(tb, B("k"), 1, NULL, 0, MERIDIAN_OP_REMOVE_FIELD, NULL, 0, 0, NULL, 0) ==
              MERIDIAN_INVALID_ARGUMENT); /* no field to remove */
        CHECK(meridian_batch_apply(tb, B("k"), 1, NULL, 0, 42, NULL, 0, 0, NULL, 0) ==
              MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_apply(tb, B("k"), 1, path, 5, MERIDIAN_OP_LWW_SET, B("v"), 1, 0, NULL, 0) ==
              MERIDIAN_INVALID_ARGUMENT); /* a cut path */
        CHECK(meridian_batch_apply(NULL, B("k"), 1, NULL, 0, MERIDIAN_OP_LWW_SET, B("v"), 1, 0, NULL, 0) ==
              MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_batch_commit(e, tb, NULL) == MERIDIAN_INVALID_ARGUMENT); /* nothing was added */
        /* An expiry alone in a batch, and a map field write at a path, with a TTL. */
        CHECK(meridian_batch_apply(tb, B("ttl:m"), 5, path, sizeof path, MERIDIAN_OP_COUNTER_ADD, NULL, 0,
                                   3, NULL, 0) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("ttl:m"), 5, 1000) == MERIDIAN_OK);
        CHECK(meridian_batch_commit(e, tb, NULL) == MERIDIAN_OK);
        CHECK(meridian_read_json(e, B("ttl:m"), 5, &b) == MERIDIAN_OK);
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
        CHECK(meridian_expires_at(e, B("ttl:m"), 5, &at) == MERIDIAN_OK);
        latest = at > latest ? at : latest;
        CHECK(meridian_batch_free(tb) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("k"), 1, 10) == MERIDIAN_CLOSED);
        CHECK(meridian_batch_persist(tb, B("k"), 1) == MERIDIAN_CLOSED);

        /* Past their times (about 1.5 s after the first batch): gone. */
        while (wall_ms() < latest + 100) {
            usleep(50 * 1000);
        }
        CHECK(meridian_lww_get(e, B("ttl:v"), 5, &b) == MERIDIAN_NOT_FOUND);
        CHECK(b.data == NULL && b.len == 0);
        CHECK(meridian_counter_get(e, B("ttl:c"), 5, &n) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_register_get(e, B("ttl:r"), 5, &values, &context) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_lww_get(e, B("ttl:at"), 6, &b) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_lww_get(e, B("ttl:e"), 5, &b) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_read_json(e, B("ttl:m"), 5, &b) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_expires_at(e, B("ttl:v"), 5, &at) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_lww_get(e, B("ttl:kept"), 8, &b) == MERIDIAN_OK); /* persisted */
        CHECK(b.len == 4 && memcmp(b.data, "kept", 4) == 0);
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
        CHECK(meridian_lww_get(e, B("ttl:p"), 5, &b) == MERIDIAN_OK); /* persisted in its batch */
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
        CHECK(meridian_lww_get(e, B("ttl:far"), 7, &b) == MERIDIAN_OK);
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
        CHECK(meridian_persist(e, B("ttl:far"), 7, NULL) == MERIDIAN_OK);
        CHECK(meridian_expires_at(e, B("ttl:far"), 7, &at) == MERIDIAN_NOT_FOUND);
        /* A write after expiry starts afresh: the counter counts from this increment only. */
        CHECK(meridian_counter_add(e, B("ttl:c"), 5, 2, NULL) == MERIDIAN_OK);
        CHECK(meridian_counter_get(e, B("ttl:c"), 5, &n) == MERIDIAN_OK && n == 2);
        CHECK(meridian_expires_at(e, B("ttl:c"), 5, &at) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_lww_set(e, B("ttl:v"), 5, B("again"), 5, NULL) == MERIDIAN_OK);
        CHECK(meridian_lww_get(e, B("ttl:v"), 5, &b) == MERIDIAN_OK);
        CHECK(b.len == 5 && memcmp(b.data, "again", 5) == 0);
        CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
    }

    /* Scans: keys in order with the type of their values. */
    MeridianScan *scan = NULL;
    CHECK(meridian_scan_prefix(e, B("b"), 1, 10, &scan) == MERIDIAN_OK);
    MeridianKind kind;
    MeridianBuffer key = {0};
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_OK);
    CHECK(key.len == 2 && memcmp(key.data, "b1", 2) == 0 && kind == MERIDIAN_KIND_LWW);
    CHECK(meridian_buffer_free(&key) == MERIDIAN_OK);
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_OK && kind == MERIDIAN_KIND_COUNTER);
    CHECK(meridian_buffer_free(&key) == MERIDIAN_OK);
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_OK && kind == MERIDIAN_KIND_SET);
    CHECK(meridian_buffer_free(&key) == MERIDIAN_OK);
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_NOT_FOUND);
    CHECK(meridian_scan_next(scan, NULL, &kind) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_scan_free(scan) == MERIDIAN_OK);
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_CLOSED);
    CHECK(meridian_scan_range(e, B("b2"), 2, B("c"), 1, 10, &scan) == MERIDIAN_OK);
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_OK && key.data[1] == '2');
    CHECK(meridian_buffer_free(&key) == MERIDIAN_OK);
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_OK && key.data[1] == '3');
    CHECK(meridian_buffer_free(&key) == MERIDIAN_OK);
    CHECK(meridian_scan_next(scan, &key, &kind) == MERIDIAN_NOT_FOUND);
    CHECK(meridian_scan_free(scan) == MERIDIAN_OK);
    CHECK(meridian_scan_prefix(e, B("b"), 1, 10, NULL) == MERIDIAN_INVALID_ARGUMENT);

    /* A scan larger than a page: every key once, in order, and no more than its limit. */
    {
        char k[16];
        for (int i = 0; i < 1000; i++) {
            snprintf(k, sizeof k, "many:%04d", i);
            CHECK(meridian_lww_set(e, B(k), strlen(k), B("x"), 1, NULL) == MERIDIAN_OK);
        }
        MeridianScan *many = NULL;
        CHECK(meridian_scan_prefix(e, B("many:"), 5, SIZE_MAX, &many) == MERIDIAN_OK);
        int seen = 0;
        while (meridian_scan_next(many, &key, &kind) == MERIDIAN_OK) {
            snprintf(k, sizeof k, "many:%04d", seen);
            CHECK(key.len == strlen(k) && memcmp(key.data, k, key.len) == 0);
            CHECK(meridian_buffer_free(&key) == MERIDIAN_OK);
            seen++;
        }
        CHECK(seen == 1000);
        CHECK(meridian_scan_free(many) == MERIDIAN_OK);
        CHECK(meridian_scan_prefix(e, B("many:"), 5, 600, &many) == MERIDIAN_OK);
        for (seen = 0; meridian_scan_next(many, &key, &kind) == MERIDIAN_OK; seen++) {
            CHECK(meridian_buffer_free(&key) == MERIDIAN_OK);
        }
        CHECK(seen == 600);
        CHECK(meridian_scan_free(many) == MERIDIAN_OK);
    }

    /* Deletes. */
    CHECK(meridian_delete(e, B("k"), 1, NULL) == MERIDIAN_OK);
    CHECK(meridian_lww_get(e, B("k"), 1, &b) == MERIDIAN_NOT_FOUND);

    /* Tokens: bytes, merge, waits. */
    MeridianBuffer tb = {0};
    CHECK(meridian_token_bytes(t1, &tb) == MERIDIAN_OK && tb.len > 0);
    MeridianToken *t2 = NULL;
    CHECK(meridian_token_from_bytes(tb.data, tb.len, &t2) == MERIDIAN_OK);
    CHECK(meridian_buffer_free(&tb) == MERIDIAN_OK);
    {
        MeridianToken *bad = (MeridianToken *)(uintptr_t)0x1;
        CHECK(meridian_token_from_bytes(B("\x07garbage"), 8, &bad) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(bad == NULL); /* cleared on entry */
    }
    MeridianToken *session = NULL;
    CHECK(meridian_token_new(NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_token_from_bytes(B("\x01"), 1, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_token_bytes(t2, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_token_new(&session) == MERIDIAN_OK);
    CHECK(meridian_token_merge(session, t2) == MERIDIAN_OK);
    int covered = -1;
    CHECK(meridian_wait_covers(e, session, 100, &covered) == MERIDIAN_OK && covered == 1);
    CHECK(meridian_wait_covers(e, session, 100, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_wait_covers(e, NULL, 100, &covered) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_token_free(t1) == MERIDIAN_OK);
    CHECK(meridian_token_free(t1) == MERIDIAN_CLOSED); /* freed twice: refused */
    CHECK(meridian_token_merge(session, t1) == MERIDIAN_CLOSED);
    CHECK(meridian_token_free(t2) == MERIDIAN_OK);
    CHECK(meridian_token_free(session) == MERIDIAN_OK);
    CHECK(meridian_token_free(NULL) == MERIDIAN_OK);

    /* Change feeds: the changes under a prefix after a position, one event at a time. */
    {
        char json[4096];
        MeridianFeed *feed = NULL;
        CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, NULL, &feed) == MERIDIAN_OK && feed != NULL);
        /* Nothing yet: a timeout is MERIDIAN_NOT_FOUND with an empty buffer (not an error). */
        double started = now_s();
        CHECK(next_event(feed, 200, json, sizeof json) == MERIDIAN_NOT_FOUND);
        CHECK(now_s() - started >= 0.15);
        CHECK(next_event(feed, 0, json, sizeof json) == MERIDIAN_NOT_FOUND);
        MeridianToken *start = NULL;
        CHECK(meridian_feed_position(feed, &start) == MERIDIAN_OK && start != NULL);

        CHECK(meridian_lww_set(e, B("feed:a"), 6, B("1"), 1, NULL) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:a\"") != NULL);
        CHECK(strstr(json, "\"values\":[{\"lww\":\"1\"}]") != NULL);
        MeridianToken *after_a = event_token(json);
        CHECK(after_a != NULL);
        /* A key outside the prefix is not handed out; a key holds its latest value; a
         * deletion has no values. */
        CHECK(meridian_lww_set(e, B("other"), 5, B("x"), 1, NULL) == MERIDIAN_OK);
        CHECK(meridian_counter_add(e, B("feed:b"), 6, 2, NULL) == MERIDIAN_OK);
        CHECK(meridian_counter_add(e, B("feed:b"), 6, 3, NULL) == MERIDIAN_OK);
        CHECK(meridian_delete(e, B("feed:a"), 6, NULL) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:b\"") != NULL);
        CHECK(strstr(json, "\"values\":[{\"counter\":5}]") != NULL);
        /* The position covers what was handed out, not the deletion still to come. */
        MeridianToken *mid = NULL;
        CHECK(meridian_feed_position(feed, &mid) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:a\"") != NULL && strstr(json, "\"values\":[]") != NULL);
        CHECK(next_event(feed, 100, json, sizeof json) == MERIDIAN_NOT_FOUND);
        MeridianToken *end = NULL;
        CHECK(meridian_feed_position(feed, &end) == MERIDIAN_OK);
        CHECK(meridian_feed_ack(feed, end) == MERIDIAN_OK); /* unnamed: nothing to do */
        CHECK(meridian_feed_ack(feed, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);

        /* Resumed from a token: the events after it, and nothing before. */
        CHECK(meridian_feed_open(e, B("feed:"), 5, after_a, NULL, &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:b\"") != NULL);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:a\"") != NULL && strstr(json, "\"values\":[]") != NULL);
        CHECK(next_event(feed, 100, json, sizeof json) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        CHECK(meridian_feed_open(e, B("feed:"), 5, mid, NULL, &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:a\"") != NULL && strstr(json, "\"values\":[]") != NULL);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        CHECK(meridian_feed_open(e, B("feed:"), 5, end, NULL, &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 100, json, sizeof json) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        /* Every key (no prefix) from the start: the keys outside "feed:" too. */
        CHECK(meridian_feed_open(e, NULL, 0, start, NULL, &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"other\"") != NULL);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:b\"") != NULL);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);

        /* A named feed resumes after its acknowledged position. */
        CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, "orders", &feed) == MERIDIAN_OK);
        CHECK(meridian_lww_set(e, B("feed:c"), 6, B("3"), 1, NULL) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:c\"") != NULL);
        MeridianToken *acked = NULL;
        CHECK(meridian_feed_position(feed, &acked) == MERIDIAN_OK);
        CHECK(meridian_feed_ack(feed, acked) == MERIDIAN_OK);
        CHECK(meridian_token_free(acked) == MERIDIAN_OK);
        CHECK(meridian_lww_set(e, B("feed:d"), 6, B("4"), 1, NULL) == MERIDIAN_OK);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, "orders", &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 2000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"feed:d\"") != NULL);
        CHECK(next_event(feed, 100, json, sizeof json) == MERIDIAN_NOT_FOUND);

        /* Bad arguments, each refused with the out-pointer cleared; freed feeds refused. */
        MeridianFeed *bad = (MeridianFeed *)(uintptr_t)0x1;
        CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, NULL, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_open(e, NULL, 3, NULL, NULL, &bad) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(bad == NULL);
        CHECK(meridian_feed_open(e, B("feed:"), (size_t)1 << 44, NULL, NULL, &bad) ==
              MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_open(NULL, B("feed:"), 5, NULL, NULL, &bad) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, "", &bad) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, "\xff\xfe", &bad) == MERIDIAN_INVALID_ARGUMENT);
        {
            char long_name[300];
            memset(long_name, 'n', sizeof long_name - 1);
            long_name[sizeof long_name - 1] = 0;
            CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, long_name, &bad) ==
                  MERIDIAN_INVALID_ARGUMENT);
            long_name[256] = 0; /* 256 bytes: the longest name */
            CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, long_name, &bad) == MERIDIAN_OK);
            CHECK(meridian_feed_free(bad) == MERIDIAN_OK);
        }
        CHECK(meridian_feed_open(e, B("feed:"), 5, (MeridianToken *)(uintptr_t)987654321, NULL, &bad) ==
              MERIDIAN_CLOSED);
        CHECK(meridian_client_watch(NULL, B("feed:"), 5, NULL, NULL, &bad) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_client_watch((MeridianClient *)(uintptr_t)987654321, B("feed:"), 5, NULL, NULL,
                                    &bad) == MERIDIAN_CLOSED);
        CHECK(meridian_client_watch(NULL, B("feed:"), 5, NULL, NULL, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_next(feed, 0, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_next(NULL, 0, &b) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_position(feed, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_position(NULL, &acked) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(acked == NULL); /* cleared on entry */
        CHECK(meridian_feed_ack(NULL, end) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_free(NULL) == MERIDIAN_OK);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        CHECK(meridian_feed_free(feed) == MERIDIAN_CLOSED);
        CHECK(next_event(feed, 0, json, sizeof json) == MERIDIAN_CLOSED);
        CHECK(meridian_token_free(mid) == MERIDIAN_OK);
        CHECK(meridian_feed_position(feed, &mid) == MERIDIAN_CLOSED && mid == NULL);
        CHECK(meridian_feed_ack(feed, end) == MERIDIAN_CLOSED);

        CHECK(meridian_token_free(start) == MERIDIAN_OK);
        CHECK(meridian_token_free(after_a) == MERIDIAN_OK);
        CHECK(meridian_token_free(end) == MERIDIAN_OK);
    }

    /* Client mode without a cluster: bad arguments are refused, nothing is left open. */
    MeridianClient *client = NULL;
    CHECK(meridian_client_open(NULL, &client) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_open("/nonexistent/client.toml", &client) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_open("/nonexistent/client.toml", NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_lww_set(NULL, B("k"), 1, B("v"), 1, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_counter_add(NULL, B("k"), 1, 1, MERIDIAN_CONSISTENCY_MAJORITY, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_lww_get(NULL, B("k"), 1, &b) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_counter_get(NULL, B("k"), 1, &n) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_token(NULL, &t2) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_merge_token(NULL, NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_region(NULL, &b) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_batch_commit(NULL, NULL, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_set_remove(NULL, B("k"), 1, B("e"), 1, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_map_lww_set(NULL, B("k"), 1, B("f"), 1, B("v"), 1, MERIDIAN_CONSISTENCY_LOCAL, 0,
                                      NULL) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_map_remove(NULL, B("k"), 1, B("f"), 1, 99, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_read_json(NULL, B("k"), 1, &b) == MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_expire(NULL, B("k"), 1, 1000, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_expire(NULL, B("k"), 1, UINT64_MAX, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_expire_at(NULL, B("k"), 1, 1000, MERIDIAN_CONSISTENCY_ALL, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_persist(NULL, B("k"), 1, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
          MERIDIAN_INVALID_ARGUMENT);
    CHECK(meridian_client_persist((MeridianClient *)(uintptr_t)123456789, B("k"), 1,
                                  MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) == MERIDIAN_CLOSED);
    {
        uint64_t at = 77;
        CHECK(meridian_client_expires_at(NULL, B("k"), 1, &at) == MERIDIAN_INVALID_ARGUMENT && at == 0);
        CHECK(meridian_client_expires_at(NULL, B("k"), 1, NULL) == MERIDIAN_INVALID_ARGUMENT);
    }
    CHECK(b.data == NULL && b.len == 0);
    CHECK(meridian_client_close(NULL) == MERIDIAN_OK);
    CHECK(meridian_client_close((MeridianClient *)(uintptr_t)123456789) == MERIDIAN_CLOSED);

    /* Closing: then every use is refused. */
    CHECK(meridian_engine_close(e) == MERIDIAN_OK);
    CHECK(meridian_lww_set(e, B("k"), 1, B("v"), 1, NULL) == MERIDIAN_CLOSED);
    CHECK(meridian_engine_close(e) == MERIDIAN_CLOSED);
    CHECK(meridian_engine_close(NULL) == MERIDIAN_OK);
    CHECK(meridian_lww_get(NULL, B("k"), 1, &b) == MERIDIAN_INVALID_ARGUMENT);

    /* Reopened: the data is there. */
    CHECK(meridian_engine_open(dir, &e) == MERIDIAN_OK);
    CHECK(meridian_counter_get(e, B("c"), 1, &n) == MERIDIAN_OK && n == 3);

    /* Out-parameters are cleared on entry, whatever the call comes to. */
    {
        MeridianBuffer junk = {(uint8_t *)(uintptr_t)0x1, 5};
        CHECK(meridian_lww_get(e, B("missing"), 7, &junk) == MERIDIAN_NOT_FOUND);
        CHECK(junk.data == NULL && junk.len == 0);
        MeridianToken *tj = (MeridianToken *)(uintptr_t)0x1;
        CHECK(meridian_lww_set(e, NULL, 3, B("v"), 1, &tj) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(tj == NULL);
        int64_t nj = 77;
        CHECK(meridian_counter_get(e, B("missing"), 7, &nj) == MERIDIAN_NOT_FOUND && nj == 0);
    }
    /* A copy of a buffer freed a second time is refused, not freed twice. */
    {
        MeridianBuffer one = {0};
        CHECK(meridian_lww_set(e, B("k"), 1, B("v1"), 2, NULL) == MERIDIAN_OK);
        CHECK(meridian_lww_get(e, B("k"), 1, &one) == MERIDIAN_OK);
        MeridianBuffer copy = one;
        CHECK(meridian_buffer_free(&one) == MERIDIAN_OK);
        CHECK(meridian_buffer_free(&copy) == MERIDIAN_INVALID_ARGUMENT);
    }
    /* Calls from a thread-exit destructor return a status. */
    {
        g_engine = e;
        pthread_t th;
        CHECK(pthread_create(&th, NULL, thread_with_destructor, NULL) == 0);
        CHECK(pthread_join(th, NULL) == 0);
        CHECK(g_from_destructor == MERIDIAN_UNAVAILABLE);
    }
    /* Close waits for the calls in flight (a token wait of another replica's write, 1.5 s,
     * on another thread); then the directory opens again, and an open scan of the closed
     * engine hands out nothing more. */
    {
        char other_dir[4096];
        snprintf(other_dir, sizeof other_dir, "%s-other", dir);
        MeridianEngine *other = NULL;
        CHECK(meridian_engine_open(other_dir, &other) == MERIDIAN_OK);
        struct Wait w = {e, NULL, MERIDIAN_INTERNAL, -1};
        CHECK(meridian_lww_set(other, B("elsewhere"), 9, B("v"), 1, &w.token) == MERIDIAN_OK);
        CHECK(meridian_engine_close(other) == MERIDIAN_OK);
        MeridianScan *open_scan = NULL;
        CHECK(meridian_scan_prefix(e, B("b"), 1, 10, &open_scan) == MERIDIAN_OK);
        /* Feeds: one idle, one waiting for an event on another thread (20 s). */
        MeridianFeed *open_feed = NULL;
        CHECK(meridian_feed_open(e, NULL, 0, NULL, NULL, &open_feed) == MERIDIAN_OK);
        struct FeedWait fw = {NULL, MERIDIAN_INTERNAL, 0};
        CHECK(meridian_feed_open(e, B("feed:"), 5, NULL, "closing", &fw.feed) == MERIDIAN_OK);
        pthread_t feed_th;
        CHECK(pthread_create(&feed_th, NULL, wait_on_feed, &fw) == 0);
        pthread_t th;
        double started = now_s();
        CHECK(pthread_create(&th, NULL, wait_on_engine, &w) == 0);
        usleep(200 * 1000);
        CHECK(meridian_engine_close(e) == MERIDIAN_OK);
        CHECK(now_s() - started >= 1.0); /* it waited for the token wait */
        CHECK(pthread_join(th, NULL) == 0);
        CHECK(w.status == MERIDIAN_OK && w.covered == 0);
        CHECK(meridian_scan_next(open_scan, &key, &kind) == MERIDIAN_CLOSED);
        CHECK(meridian_scan_free(open_scan) == MERIDIAN_OK);
        /* The waiting feed was told at once; the feeds let go of the engine (it reopens
         * below) and answer MERIDIAN_CLOSED, but still say their position. */
        CHECK(pthread_join(feed_th, NULL) == 0);
        CHECK(fw.status == MERIDIAN_CLOSED && fw.took < 5.0);
        MeridianBuffer ev = {0};
        CHECK(meridian_feed_next(open_feed, 0, &ev) == MERIDIAN_CLOSED);
        MeridianToken *closed_at = NULL;
        CHECK(meridian_feed_ack(open_feed, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_feed_position(open_feed, &closed_at) == MERIDIAN_OK);
        CHECK(meridian_feed_ack(open_feed, closed_at) == MERIDIAN_CLOSED);
        CHECK(meridian_token_free(closed_at) == MERIDIAN_OK);
        CHECK(meridian_feed_free(open_feed) == MERIDIAN_OK);
        CHECK(meridian_feed_free(fw.feed) == MERIDIAN_OK);
        CHECK(meridian_token_free(w.token) == MERIDIAN_OK);
        CHECK(meridian_engine_open(dir, &e) == MERIDIAN_OK);
    }
    CHECK(meridian_engine_close(e) == MERIDIAN_OK);
    {
        char exit_dir[4096];
        snprintf(exit_dir, sizeof exit_dir, "%s-at-exit", dir);
        CHECK(meridian_engine_open(exit_dir, &g_at_exit) == MERIDIAN_OK);
        CHECK(meridian_lww_set(g_at_exit, B("k"), 1, B("v"), 1, NULL) == MERIDIAN_OK);
        CHECK(atexit(close_at_exit) == 0);
    }
    printf("ok\n");
    return 0;
}
