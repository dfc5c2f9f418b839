/*
 * check.h - what the C tests share: expectations that count failures, IDs,
 * and opening a store. Each test_*.c is its own program.
 */
#ifndef SHOAL_TEST_CHECK_H
#define SHOAL_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "../store.h"

static int failures = 0;

#define EXPECT(cond)                                                       \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                    \
        }                                                                  \
    } while (0)

#define EXPECT_RC(expr, want)                                                          \
    do {                                                                               \
        store_status_t got_ = (expr);                                                  \
        if (got_ != (want)) {                                                          \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__, \
                    #expr, store_strerror(got_), store_strerror(want));                \
            failures++;                                                                \
        }                                                                              \
    } while (0)

static void make_id(uint8_t *id, uint64_t n) {
    memset(id, 0, STORE_ID_SIZE);
    memcpy(id, &n, sizeof n);
    id[19] = 0x5a;
}

static void check_valid(store_t *s) {
    char msg[256];
    store_status_t rc = store_validate(s, msg, sizeof msg);
    if (rc != STORE_OK) {
        fprintf(stderr, "validate: %s\n", msg);
        failures++;
    }
}

static store_t *open_store(uint64_t capacity, uint32_t max_objects, int *fd) {
    store_t *s = NULL;
    EXPECT_RC(store_segment_create(capacity, max_objects, fd), STORE_OK);
    EXPECT_RC(store_attach(*fd, &s), STORE_OK);
    return s;
}

/* The exit status of a test program: 0 when every expectation held. */
static int report(const char *what) {
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("all C %s tests passed\n", what);
    return 0;
}

#endif
