/* Every function of the embedded C ABI, with good and bad arguments; run under
 * AddressSanitizer by ffi/tests/c_program.rs. Prints "ok" and exits 0 when every check holds. */
#include "meridian.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, meridian_last_error());                                     \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

#define B(s) ((const uint8_t *)(s))

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    MeridianEngine *e = NULL;

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

    /* Deletes. */
    CHECK(meridian_delete(e, B("k"), 1, NULL) == MERIDIAN_OK);
    CHECK(meridian_lww_get(e, B("k"), 1, &b) == MERIDIAN_NOT_FOUND);

    /* Tokens: bytes, merge, waits. */
    MeridianBuffer tb = {0};
    CHECK(meridian_token_bytes(t1, &tb) == MERIDIAN_OK && tb.len > 0);
    MeridianToken *t2 = NULL;
    CHECK(meridian_token_from_bytes(tb.data, tb.len, &t2) == MERIDIAN_OK);
    CHECK(meridian_buffer_free(&tb) == MERIDIAN_OK);
    CHECK(meridian_token_from_bytes(B("\x07garbage"), 8, &t2) == MERIDIAN_INVALID_ARGUMENT);
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

    /* Closing: then every use is refused. */
    CHECK(meridian_engine_close(e) == MERIDIAN_OK);
    CHECK(meridian_lww_set(e, B("k"), 1, B("v"), 1, NULL) == MERIDIAN_CLOSED);
    CHECK(meridian_engine_close(e) == MERIDIAN_CLOSED);
    CHECK(meridian_engine_close(NULL) == MERIDIAN_OK);
    CHECK(meridian_lww_get(NULL, B("k"), 1, &b) == MERIDIAN_INVALID_ARGUMENT);

    /* Reopened: the data is there. */
    CHECK(meridian_engine_open(dir, &e) == MERIDIAN_OK);
    CHECK(meridian_counter_get(e, B("c"), 1, &n) == MERIDIAN_OK && n == 3);
    CHECK(meridian_engine_close(e) == MERIDIAN_OK);
    printf("ok\n");
    return 0;
}
