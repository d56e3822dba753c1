/* Calls on one client handle from several threads run at once: while one thread's write is
 * held up in the regions (its read context names a write no region has, which each region
 * waits for before refusing it), another thread on the same handle writes and reads. Then
 * expiry through the client (a write with a TTL, expires_at, persist, expire), and
 * watches through the client (meridian_client_watch): events, positions, a named watch
 * resumed, a close while one waits. Run by ffi/tests/client_threads.rs with two node
 * configurations and a cluster file; the nodes run in this process
 * (meridian_engine_open_node). Prints "ok" and exits 0 when every check holds; exits 2 when a
 * node cannot start (its port was taken meanwhile: the runner tries again). */
#include "meridian.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
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

static MeridianClient *g_client;
/* The held-up write's read context, and what it came to. */
static uint8_t g_context[32];
static size_t g_context_len;
static atomic_int g_slow_started;
static atomic_int g_slow_returned;
static MeridianStatus g_slow_status = MERIDIAN_OK;
static double g_slow_seconds;

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

static void *slow_write(void *arg) {
    (void)arg;
    atomic_store(&g_slow_started, 1);
    double started = now_s();
    g_slow_status = meridian_client_register_put(g_client, B("held"), 4, B("v"), 1, g_context,
                                                 g_context_len, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL);
    g_slow_seconds = now_s() - started;
    atomic_store(&g_slow_returned, 1);
    return NULL;
}

/* A LEB128 varint (postcard's integers) at *p, moving *p past it; 0 on a malformed one. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static size_t write_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

/* The read context of a write `ahead` writes beyond the token's first entry: token bytes
 * (format 1, postcard: the number of entries, then each origin and counter). */
static int context_beyond(const MeridianBuffer *token, uint64_t ahead) {
    const uint8_t *p = token->data, *end = token->data + token->len;
    uint64_t entries, origin, counter;
    if (token->len < 2 || *p++ != 1 || !read_varint(&p, end, &entries) || entries < 1 ||
        !read_varint(&p, end, &origin) || !read_varint(&p, end, &counter)) {
        return 0;
    }
    size_t n = 0;
    g_context[n++] = 1;
    g_context[n++] = 1;
    n += write_varint(g_context + n, origin);
    n += write_varint(g_context + n, counter + ahead);
    g_context_len = n;
    return 1;
}

/* The next event of a watch as a NUL-terminated JSON string (skipping none), waiting up to
 * `timeout_ms`. */
static MeridianStatus next_event(MeridianFeed *feed, uint64_t timeout_ms, char *out, size_t cap) {
    MeridianBuffer ev = {0};
    MeridianStatus st = meridian_feed_next(feed, timeout_ms, &ev);
    out[0] = 0;
    if (st == MERIDIAN_OK) {
        size_t n = ev.len < cap - 1 ? ev.len : cap - 1;
        memcpy(out, ev.data, n);
        out[n] = 0;
        meridian_buffer_free(&ev);
    }
    return st;
}

/* Whether an event of `key` comes within `seconds` (events of other keys, and repeats, are
 * skipped: delivery is at least once). */
static int saw_key(MeridianFeed *feed, const char *key, double seconds) {
    char json[4096], want[256];
    snprintf(want, sizeof want, "\"key\":\"%s\"", key);
    double end = now_s() + seconds;
    while (now_s() < end) {
        MeridianStatus st = next_event(feed, 500, json, sizeof json);
        if (st == MERIDIAN_OK && strstr(json, want) != NULL) {
            return 1;
        }
        if (st != MERIDIAN_OK && st != MERIDIAN_NOT_FOUND) {
            fprintf(stderr, "meridian_feed_next: status %d (%s)\n", (int)st, meridian_last_error());
            return 0;
        }
    }
    return 0;
}

/* A watch waiting for an event on another thread while its client closes. */
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
    if (argc != 4) {
        fprintf(stderr, "usage: %s NODE_A.toml NODE_B.toml CLUSTER.toml\n", argv[0]);
        return 1;
    }
    MeridianEngine *a = NULL, *b = NULL;
    if (meridian_engine_open_node(argv[1], &a) != MERIDIAN_OK ||
        meridian_engine_open_node(argv[2], &b) != MERIDIAN_OK) {
        fprintf(stderr, "a node did not start: %s\n", meridian_last_error());
        meridian_engine_close(a);
        meridian_engine_close(b);
        return 2;
    }
    CHECK(meridian_client_open(argv[3], &g_client) == MERIDIAN_OK);

    /* A first write: its token names the origin of the region that took it. */
    MeridianToken *first = NULL;
    CHECK(meridian_client_lww_set(g_client, B("first"), 5, B("1"), 1, MERIDIAN_CONSISTENCY_LOCAL,
                                  0, &first) == MERIDIAN_OK);
    MeridianBuffer bytes = {0};
    CHECK(meridian_token_bytes(first, &bytes) == MERIDIAN_OK);
    CHECK(context_beyond(&bytes, 1000000));
    meridian_buffer_free(&bytes);
    meridian_token_free(first);

    /* A register write whose context names a million writes more of that origin: never
     * written, yet an origin a live region writes under, so each region waits for them (up to
     * the session wait, within the write's deadline: most of a second) before refusing it, and
     * the next region is asked. */
    pthread_t slow;
    CHECK(pthread_create(&slow, NULL, slow_write, NULL) == 0);
    while (!atomic_load(&g_slow_started)) {
        usleep(1000);
    }
    /* Time for the held-up call to reach the regions (with a lock around calls, it would hold
     * it now). */
    usleep(200 * 1000);

    /* Meanwhile, on the same handle: a write and a read of it. */
    double fast_started = now_s();
    CHECK(meridian_client_lww_set(g_client, B("fast"), 4, B("v1"), 2, MERIDIAN_CONSISTENCY_LOCAL,
                                  0, NULL) == MERIDIAN_OK);
    MeridianBuffer value = {0};
    CHECK(meridian_client_lww_get(g_client, B("fast"), 4, &value) == MERIDIAN_OK);
    CHECK(value.len == 2 && memcmp(value.data, "v1", 2) == 0);
    meridian_buffer_free(&value);
    int returned = atomic_load(&g_slow_returned);
    double fast_seconds = now_s() - fast_started;
    CHECK(pthread_join(slow, NULL) == 0);
    if (returned) {
        fprintf(stderr,
                "the write and read (%.3f s) waited for the held-up call on another thread "
                "(%.3f s, status %d)\n",
                fast_seconds, g_slow_seconds, (int)g_slow_status);
        return 1;
    }
    if (g_slow_status != MERIDIAN_NOT_YET_VISIBLE) {
        fprintf(stderr, "the held-up write: status %d, not MERIDIAN_NOT_YET_VISIBLE\n",
                (int)g_slow_status);
        return 1;
    }
    /* Nothing of the refused write entered the session: reads go on. */
    CHECK(meridian_client_lww_get(g_client, B("first"), 5, &value) == MERIDIAN_OK);
    CHECK(value.len == 1 && value.data[0] == '1');
    meridian_buffer_free(&value);
    CHECK(meridian_client_lww_get(g_client, B("held"), 4, &value) == MERIDIAN_NOT_FOUND);

    /* Expiry through the client: a write with a TTL (a batch holding both), its expiry time
     * from a region, persist, expire, then the value gone past its time. Written to every
     * region, so that whichever answers holds them. */
    {
        uint64_t before = wall_ms();
        MeridianBatch *tb = NULL;
        CHECK(meridian_batch_new(&tb) == MERIDIAN_OK);
        CHECK(meridian_batch_lww_set(tb, B("ttl:v"), 5, B("soon"), 4) == MERIDIAN_OK);
        CHECK(meridian_batch_ttl(tb, B("ttl:v"), 5, 1500) == MERIDIAN_OK);
        CHECK(meridian_batch_lww_set(tb, B("ttl:kept"), 8, B("kept"), 4) == MERIDIAN_OK);
        CHECK(meridian_batch_expire_at(tb, B("ttl:kept"), 8, before + 1500) == MERIDIAN_OK);
        CHECK(meridian_client_batch_commit(g_client, tb, MERIDIAN_CONSISTENCY_ALL, 0, NULL) == MERIDIAN_OK);
        CHECK(meridian_batch_free(tb) == MERIDIAN_OK);
        uint64_t after = wall_ms();
        CHECK(meridian_client_lww_get(g_client, B("ttl:v"), 5, &value) == MERIDIAN_OK);
        CHECK(value.len == 4 && memcmp(value.data, "soon", 4) == 0);
        meridian_buffer_free(&value);
        uint64_t at = 0;
        CHECK(meridian_client_expires_at(g_client, B("ttl:v"), 5, &at) == MERIDIAN_OK);
        CHECK(at >= before + 1500 && at <= after + 1500);
        uint64_t latest = at;
        CHECK(meridian_client_expires_at(g_client, B("ttl:kept"), 8, &at) == MERIDIAN_OK &&
              at == before + 1500);
        MeridianToken *pt = NULL;
        CHECK(meridian_client_persist(g_client, B("ttl:kept"), 8, MERIDIAN_CONSISTENCY_ALL, 0, &pt) ==
              MERIDIAN_OK && pt != NULL);
        CHECK(meridian_token_free(pt) == MERIDIAN_OK);
        CHECK(meridian_client_expires_at(g_client, B("ttl:kept"), 8, &at) == MERIDIAN_NOT_FOUND && at == 0);
        /* Expire, then expire at a time: the later write's expiry replaces the one it saw. */
        CHECK(meridian_client_lww_set(g_client, B("ttl:e"), 5, B("e"), 1, MERIDIAN_CONSISTENCY_ALL, 0,
                                      NULL) == MERIDIAN_OK);
        CHECK(meridian_client_expires_at(g_client, B("ttl:e"), 5, &at) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_client_expire(g_client, B("ttl:e"), 5, 60000, MERIDIAN_CONSISTENCY_ALL, 0, NULL) ==
              MERIDIAN_OK);
        CHECK(meridian_client_expires_at(g_client, B("ttl:e"), 5, &at) == MERIDIAN_OK);
        CHECK(at >= before + 60000 && at <= wall_ms() + 60000);
        uint64_t e_at = wall_ms() + 1000;
        CHECK(meridian_client_expire_at(g_client, B("ttl:e"), 5, e_at, MERIDIAN_CONSISTENCY_ALL, 0, NULL) ==
              MERIDIAN_OK);
        CHECK(meridian_client_expires_at(g_client, B("ttl:e"), 5, &at) == MERIDIAN_OK && at == e_at);
        latest = e_at > latest ? e_at : latest;
        CHECK(meridian_client_expires_at(g_client, B("first"), 5, &at) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_client_expires_at(g_client, B("ttl:none"), 8, &at) == MERIDIAN_NOT_FOUND);
        /* Bad arguments. */
        CHECK(meridian_client_expire(g_client, B("ttl:e"), 5, MERIDIAN_EXPIRY_MS_MAX + 1,
                                     MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_client_expire_at(g_client, B("ttl:e"), 5, 1000, 42, 0, NULL) ==
              MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_client_persist(g_client, NULL, 5, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
              MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_client_expires_at(g_client, B("ttl:e"), 5, NULL) == MERIDIAN_INVALID_ARGUMENT);
        CHECK(meridian_client_expires_at(g_client, NULL, 5, &at) == MERIDIAN_INVALID_ARGUMENT);
        /* Past their time: gone, in whichever region answers; the persisted key is kept. */
        while (wall_ms() < latest + 200) {
            usleep(50 * 1000);
        }
        CHECK(meridian_client_lww_get(g_client, B("ttl:v"), 5, &value) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_client_lww_get(g_client, B("ttl:e"), 5, &value) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_client_expires_at(g_client, B("ttl:v"), 5, &at) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_client_lww_get(g_client, B("ttl:kept"), 8, &value) == MERIDIAN_OK);
        CHECK(value.len == 4 && memcmp(value.data, "kept", 4) == 0);
        meridian_buffer_free(&value);
    }

    /* Watches through the client: the changes under a prefix, one event at a time. */
    {
        char json[4096];
        MeridianFeed *feed = NULL;
        CHECK(meridian_client_watch(g_client, B("watch:"), 6, NULL, NULL, &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 200, json, sizeof json) == MERIDIAN_NOT_FOUND);
        CHECK(meridian_client_lww_set(g_client, B("watch:1"), 7, B("a"), 1, MERIDIAN_CONSISTENCY_LOCAL,
                                      0, NULL) == MERIDIAN_OK);
        CHECK(meridian_client_counter_add(g_client, B("elsewhere"), 9, 1, MERIDIAN_CONSISTENCY_LOCAL, 0,
                                          NULL) == MERIDIAN_OK);
        CHECK(meridian_client_counter_add(g_client, B("watch:2"), 7, 4, MERIDIAN_CONSISTENCY_LOCAL, 0,
                                          NULL) == MERIDIAN_OK);
        CHECK(next_event(feed, 5000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"watch:1\"") != NULL && strstr(json, "{\"lww\":\"a\"}") != NULL);
        CHECK(next_event(feed, 5000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"watch:2\"") != NULL && strstr(json, "{\"counter\":4}") != NULL);
        MeridianToken *position = NULL;
        CHECK(meridian_feed_position(feed, &position) == MERIDIAN_OK && position != NULL);
        CHECK(meridian_feed_ack(feed, position) == MERIDIAN_OK); /* unnamed: nothing to do */
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        /* Resumed from the position: only what came after. */
        CHECK(meridian_client_delete(g_client, B("watch:1"), 7, MERIDIAN_CONSISTENCY_LOCAL, 0, NULL) ==
              MERIDIAN_OK);
        CHECK(meridian_client_watch(g_client, B("watch:"), 6, position, NULL, &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 5000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"watch:1\"") != NULL && strstr(json, "\"values\":[]") != NULL);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        CHECK(meridian_token_free(position) == MERIDIAN_OK);

        /* A named watch resumes after its acknowledged position. */
        CHECK(meridian_client_watch(g_client, B("named:"), 6, NULL, "c-consumer", &feed) == MERIDIAN_OK);
        CHECK(meridian_client_lww_set(g_client, B("named:1"), 7, B("a"), 1, MERIDIAN_CONSISTENCY_LOCAL,
                                      0, NULL) == MERIDIAN_OK);
        CHECK(saw_key(feed, "named:1", 10));
        CHECK(meridian_feed_position(feed, &position) == MERIDIAN_OK);
        CHECK(meridian_feed_ack(feed, position) == MERIDIAN_OK);
        CHECK(meridian_token_free(position) == MERIDIAN_OK);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        CHECK(meridian_client_lww_set(g_client, B("named:2"), 7, B("b"), 1, MERIDIAN_CONSISTENCY_LOCAL,
                                      0, NULL) == MERIDIAN_OK);
        CHECK(meridian_client_watch(g_client, B("named:"), 6, NULL, "c-consumer", &feed) == MERIDIAN_OK);
        CHECK(next_event(feed, 5000, json, sizeof json) == MERIDIAN_OK);
        CHECK(strstr(json, "\"key\":\"named:2\"") != NULL);

        /* The client closes: a wait in progress on another thread returns MERIDIAN_CLOSED at
         * once, the watches answer MERIDIAN_CLOSED (their position still answers), and the
         * close itself is not held up by them. */
        struct FeedWait fw = {NULL, MERIDIAN_INTERNAL, 0};
        CHECK(meridian_client_watch(g_client, B("never:"), 6, NULL, NULL, &fw.feed) == MERIDIAN_OK);
        pthread_t waiter;
        CHECK(pthread_create(&waiter, NULL, wait_on_feed, &fw) == 0);
        usleep(300 * 1000);
        CHECK(meridian_client_close(g_client) == MERIDIAN_OK);
        CHECK(pthread_join(waiter, NULL) == 0);
        CHECK(fw.status == MERIDIAN_CLOSED && fw.took < 5.0);
        CHECK(next_event(feed, 0, json, sizeof json) == MERIDIAN_CLOSED);
        CHECK(meridian_feed_position(feed, &position) == MERIDIAN_OK);
        CHECK(meridian_feed_ack(feed, position) == MERIDIAN_CLOSED);
        CHECK(meridian_token_free(position) == MERIDIAN_OK);
        CHECK(meridian_feed_free(feed) == MERIDIAN_OK);
        CHECK(meridian_feed_free(fw.feed) == MERIDIAN_OK);
        CHECK(meridian_client_watch(g_client, B("watch:"), 6, NULL, NULL, &feed) == MERIDIAN_CLOSED);
    }

    CHECK(meridian_engine_close(a) == MERIDIAN_OK);
    CHECK(meridian_engine_close(b) == MERIDIAN_OK);
    printf("ok\n");
    return 0;
}
