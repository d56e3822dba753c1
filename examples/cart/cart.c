/* A shopping cart in three regions, from C (`make example-cart-c`): an OR-map of counters; two
 * regions add items at once, a third removes one it has seen, every region ends with the same
 * cart; a session's writes follow it across a failover (its token). Three embedded engines,
 * each replicating by itself over QUIC on loopback, configured by `meridian local-cluster`
 * (the directory is the first argument). */
#include "meridian.h"

#include <stdio.h>
#include <string.h>

#define CART ((const uint8_t *)"cart:42")
#define CART_LEN 7
#define WAIT_MS 20000

static int fail(const char *what) {
    fprintf(stderr, "error: %s (%s)\n", what, meridian_last_error());
    return 1;
}

#define TRY(call, what)                    \
    do {                                   \
        if ((call) != MERIDIAN_OK) {       \
            return fail(what);             \
        }                                  \
    } while (0)

static MeridianStatus add(MeridianEngine *e, const char *item, int64_t n, MeridianToken *seen) {
    MeridianToken *t = NULL;
    MeridianStatus s = meridian_map_counter_add(e, CART, CART_LEN, (const uint8_t *)item,
                                                strlen(item), n, &t);
    if (s == MERIDIAN_OK) {
        s = meridian_token_merge(seen, t);
        meridian_token_free(t);
    }
    return s;
}

/* Prints a region's cart; returns the count of `item` (-1 when absent). */
static int64_t show(const char *region, MeridianEngine *e, const char *item) {
    const char *items[] = {"apple", "pen", "book"};
    int64_t found = -1;
    printf("  %-13s {", region);
    for (int i = 0; i < 3; i++) {
        int64_t n;
        if (meridian_map_get_counter(e, CART, CART_LEN, (const uint8_t *)items[i],
                                     strlen(items[i]), &n) == MERIDIAN_OK) {
            printf(" %s x%lld", items[i], (long long)n);
            if (strcmp(items[i], item) == 0) {
                found = n;
            }
        }
    }
    printf(" }\n");
    return found;
}

static int covers(MeridianEngine *e, MeridianToken *t) {
    int covered = 0;
    return meridian_wait_covers(e, t, WAIT_MS, &covered) == MERIDIAN_OK && covered;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char path[4096];
    MeridianEngine *us = NULL, *eu = NULL, *ap = NULL;
    snprintf(path, sizeof path, "%s/use1.toml", argv[1]);
    TRY(meridian_engine_open_node(path, &us), "opening us-east");
    snprintf(path, sizeof path, "%s/euw1.toml", argv[1]);
    TRY(meridian_engine_open_node(path, &eu), "opening eu-west");
    snprintf(path, sizeof path, "%s/apn1.toml", argv[1]);
    TRY(meridian_engine_open_node(path, &ap), "opening ap-northeast");

    MeridianToken *seen = NULL;
    TRY(meridian_token_new(&seen), "token");
    printf("us-east and eu-west add items at the same time:\n");
    TRY(add(us, "apple", 2, seen), "adding in us-east");
    TRY(add(eu, "apple", 1, seen), "adding in eu-west");
    TRY(add(eu, "pen", 1, seen), "adding in eu-west");
    if (!covers(ap, seen)) return fail("ap-northeast did not get the adds");
    printf("ap-northeast, which has seen both, removes the pen:\n");
    MeridianToken *removed = NULL;
    TRY(meridian_map_remove(ap, CART, CART_LEN, (const uint8_t *)"pen", 3, &removed), "removing");
    TRY(meridian_token_merge(seen, removed), "token");
    meridian_token_free(removed);
    if (!covers(us, seen) || !covers(eu, seen)) return fail("the regions did not converge");
    int64_t pens;
    if (show("us-east", us, "apple") != 3 || show("eu-west", eu, "apple") != 3 ||
        show("ap-northeast", ap, "apple") != 3 ||
        meridian_map_get_counter(ap, CART, CART_LEN, (const uint8_t *)"pen", 3, &pens) !=
            MERIDIAN_NOT_FOUND) {
        return fail("the regions disagree");
    }

    printf("a session adds a book in eu-west (held by a second region, as a majority write\n");
    printf("would be); eu-west fails; the session reads on in ap-northeast with its token:\n");
    MeridianToken *session = NULL;
    TRY(meridian_token_new(&session), "token");
    TRY(add(eu, "book", 1, session), "adding in eu-west");
    if (!covers(us, session)) return fail("the write did not reach a second region");
    TRY(meridian_engine_close(eu), "closing eu-west");
    if (!covers(ap, session)) return fail("the session's write did not reach ap-northeast");
    if (show("ap-northeast", ap, "book") != 1) return fail("the session lost its write");
    printf("every region merged the same cart, and the session read its own write after the failover\n");

    meridian_token_free(session);
    meridian_token_free(seen);
    TRY(meridian_engine_close(us), "closing us-east");
    TRY(meridian_engine_close(ap), "closing ap-northeast");
    return 0;
}
