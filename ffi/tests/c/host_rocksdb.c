/* A host that links its own RocksDB (the system's, through its C API) and Meridian's static
 * library side by side: each keeps its own; run by ffi/tests/c_program.rs. Prints "ok". */
#include "meridian.h"

#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);       \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char host_dir[4096], meridian_dir[4096];
    snprintf(host_dir, sizeof host_dir, "%s-host", argv[1]);
    snprintf(meridian_dir, sizeof meridian_dir, "%s-meridian", argv[1]);

    /* The host's own RocksDB. */
    char *err = NULL;
    rocksdb_options_t *options = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(options, 1);
    rocksdb_t *db = rocksdb_open(options, host_dir, &err);
    CHECK(err == NULL && db != NULL);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_put(db, wo, "host", 4, "own", 3, &err);
    CHECK(err == NULL);

    /* Meridian beside it. */
    MeridianEngine *e = NULL;
    CHECK(meridian_engine_open(meridian_dir, &e) == MERIDIAN_OK);
    CHECK(meridian_lww_set(e, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, NULL) == MERIDIAN_OK);
    MeridianBuffer b = {0};
    CHECK(meridian_lww_get(e, (const uint8_t *)"k", 1, &b) == MERIDIAN_OK);
    CHECK(b.len == 1 && b.data[0] == 'v');
    CHECK(meridian_buffer_free(&b) == MERIDIAN_OK);
    CHECK(meridian_engine_close(e) == MERIDIAN_OK);

    /* The host's RocksDB still answers. */
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    size_t len = 0;
    char *value = rocksdb_get(db, ro, "host", 4, &len, &err);
    CHECK(err == NULL && value != NULL && len == 3 && memcmp(value, "own", 3) == 0);
    rocksdb_free(value);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);
    rocksdb_options_destroy(options);
    printf("ok\n");
    return 0;
}
