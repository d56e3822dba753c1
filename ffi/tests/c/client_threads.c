/* Calls on one client handle from several threads run at once: while one thread's write is
 * held up in the regions (its read context names a write no region has, which each region
 * waits for before refusing it), another thread on the same handle writes and reads. Run by
 * ffi/tests/client_threads.rs with two node configurations and a cluster file; the nodes run
 * in this process (meridian_engine_open_node). Prints "ok" and exits 0 when every check holds;
 * exits 2 when a node cannot start (its port was taken meanwhile: the runner tries again). */
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

    CHECK(meridian_client_close(g_client) == MERIDIAN_OK);
    CHECK(meridian_engine_close(a) == MERIDIAN_OK);
    CHECK(meridian_engine_close(b) == MERIDIAN_OK);
    printf("ok\n");
    return 0;
}
