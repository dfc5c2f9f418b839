/*
 * test_store.c - unit tests of the C store core, without Python. Built and
 * run under AddressSanitizer/UBSan by tests/test_c_core.py.
 *
 * Covers: lifecycle and statuses, a long random sequence checked with
 * store_validate, two threads hammering one segment, and recovery after a
 * forked child dies holding the lock or pins.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void test_lifecycle(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    uint8_t id[STORE_ID_SIZE];
    store_object_t o, g;
    int exists;
    make_id(id, 1);
    EXPECT_RC(store_get(s, id, 0, &g, &exists), STORE_E_NOT_FOUND);
    EXPECT_RC(store_create(s, id, 100, 4, 0, &o), STORE_OK);
    EXPECT((uintptr_t)o.data % STORE_ALIGNMENT == 0);
    memcpy(o.data, "hello", 5);
    memcpy(o.metadata, "meta", 4);
    EXPECT_RC(store_create(s, id, 10, 0, 0, &g), STORE_E_EXISTS);
    EXPECT_RC(store_get(s, id, 0, &g, &exists), STORE_E_TIMEOUT);
    EXPECT(exists == 1);
    EXPECT_RC(store_get(s, id, 20, &g, &exists), STORE_E_TIMEOUT);
    EXPECT_RC(store_release(s, &o), STORE_E_STATE); /* must seal or abort first */
    EXPECT_RC(store_delete(s, id, NULL), STORE_E_STATE);
    EXPECT_RC(store_seal(s, id), STORE_OK);
    EXPECT_RC(store_seal(s, id), STORE_E_STATE);
    EXPECT_RC(store_abort(s, id), STORE_E_STATE);
    EXPECT_RC(store_get(s, id, 0, &g, NULL), STORE_OK);
    EXPECT(memcmp(g.data, "hello", 5) == 0 && memcmp(g.metadata, "meta", 4) == 0);
    EXPECT(g.data_size == 100 && g.metadata_size == 4);
    int in = 0;
    EXPECT_RC(store_contains(s, id, &in), STORE_OK);
    EXPECT(in == 1);
    EXPECT_RC(store_delete(s, id, NULL), STORE_OK); /* pinned twice: deferred */
    EXPECT_RC(store_contains(s, id, &in), STORE_OK);
    EXPECT(in == 0);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_deleted_pinned == 1 && st.num_sealed == 0);
    EXPECT_RC(store_release(s, &o), STORE_OK);
    EXPECT_RC(store_release(s, &g), STORE_OK);
    EXPECT_RC(store_release(s, &g), STORE_E_INVALID);
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.bytes_in_use == 0 && st.bytes_pinned == 0 && st.num_deleted_pinned == 0);
    EXPECT_RC(store_create(s, id, (uint64_t)2 << 20, 0, 0, &o), STORE_E_TOO_LARGE);
    EXPECT_RC(store_create(s, id, 0, 0, 0x80, &o), STORE_E_INVALID);
    check_valid(s);
    store_detach(s);
    close(fd);
}

static void test_eviction_and_full(void) {
    int fd;
    store_t *s = open_store(1 << 20, 1024, &fd);
    uint8_t id[STORE_ID_SIZE];
    store_object_t o;
    for (uint64_t k = 0; k < 8; k++) { /* 8 x 128 KiB evictable: fills it */
        make_id(id, 100 + k);
        EXPECT_RC(store_create(s, id, 120 << 10, 0, STORE_EVICTABLE, &o), STORE_OK);
        EXPECT_RC(store_seal_release(s, &o), STORE_OK);
    }
    make_id(id, 999);
    EXPECT_RC(store_create(s, id, 200 << 10, 0, 0, &o), STORE_OK); /* evicts two */
    EXPECT_RC(store_seal_release(s, &o), STORE_OK);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_evictions >= 2);
    int in;
    make_id(id, 100);
    store_contains(s, id, &in);
    EXPECT(in == 0); /* the least recently used went first */
    make_id(id, 107);
    store_contains(s, id, &in);
    EXPECT(in == 1);
    make_id(id, 1000);
    EXPECT_RC(store_create(s, id, 1000 << 10, 0, 0, &o), STORE_E_FULL);
    check_valid(s);
    store_detach(s);
    close(fd);
}

static void test_random(unsigned seed) {
    int fd;
    store_t *s = open_store(4 << 20, 256, &fd);
    enum { N = 200 };
    store_object_t held[N];
    int state[N] = {0}; /* 0 none, 1 created, 2 sealed */
    int pinned[N] = {0};
    uint8_t id[STORE_ID_SIZE];
    srand(seed);
    for (int step = 0; step < 20000; step++) {
        int k = rand() % N;
        make_id(id, (uint64_t)k);
        int op = rand() % 6;
        if (op == 0 && state[k] == 0) {
            uint64_t size = (uint64_t)(rand() % 4) == 0 ? (uint64_t)(rand() % (256 << 10)) : (uint64_t)(rand() % 512);
            store_status_t rc = store_create(s, id, size, 0, (rand() & 1) ? STORE_EVICTABLE : 0, &held[k]);
            if (rc == STORE_OK) {
                memset(held[k].data, k, size);
                state[k] = 1;
            } else {
                EXPECT(rc == STORE_E_FULL || rc == STORE_E_TABLE_FULL);
            }
        } else if (op == 1 && state[k] == 1) {
            if (rand() & 1) {
                EXPECT_RC(store_seal_release(s, &held[k]), STORE_OK);
                state[k] = 2;
            } else {
                EXPECT_RC(store_abort(s, id), STORE_OK);
                state[k] = 0;
            }
        } else if (op == 2 && state[k] == 2 && !pinned[k]) {
            store_status_t rc = store_get(s, id, 0, &held[k], NULL);
            if (rc == STORE_OK) {
                EXPECT(held[k].data_size == 0 || held[k].data[0] == (uint8_t)k);
                pinned[k] = 1;
            } else {
                EXPECT(rc == STORE_E_NOT_FOUND); /* evicted */
                state[k] = 0;
            }
        } else if (op == 3 && pinned[k]) {
            EXPECT_RC(store_release(s, &held[k]), STORE_OK);
            pinned[k] = 0;
        } else if (op == 4 && state[k] == 2) {
            store_status_t rc = store_delete(s, id, NULL);
            EXPECT(rc == STORE_OK || rc == STORE_E_NOT_FOUND);
            state[k] = 0;
            if (pinned[k]) { /* its memory must stay intact until released */
                EXPECT(held[k].data_size == 0 || held[k].data[held[k].data_size - 1] == (uint8_t)k);
                EXPECT_RC(store_release(s, &held[k]), STORE_OK);
                pinned[k] = 0;
            }
        } else if (op == 5 && step % 97 == 0) {
            uint64_t freed;
            EXPECT_RC(store_evict(s, 64 << 10, &freed), STORE_OK);
        }
        if (step % 500 == 0) check_valid(s);
    }
    check_valid(s);
    store_detach(s);
    close(fd);
}

typedef struct {
    store_t *s;
    int base;
} worker_arg_t;

static void *hammer(void *p) {
    worker_arg_t *a = p;
    uint8_t id[STORE_ID_SIZE];
    store_object_t o, g;
    for (int k = 0; k < 5000; k++) {
        make_id(id, (uint64_t)(a->base + k));
        if (store_create(a->s, id, 64, 0, 0, &o) != STORE_OK) continue;
        store_seal_release(a->s, &o);
        if (store_get(a->s, id, 0, &g, NULL) == STORE_OK) store_release(a->s, &g);
        store_delete(a->s, id, NULL);
    }
    return NULL;
}

static void test_threads(void) {
    int fd;
    store_t *s = open_store(8 << 20, 4096, &fd);
    pthread_t t[2];
    worker_arg_t args[2] = {{s, 0}, {s, 1000000}};
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, hammer, &args[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.bytes_in_use == 0 && st.num_sealed == 0);
    check_valid(s);
    store_detach(s);
    close(fd);
}

static void test_child_dies_holding_lock_and_pins(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    uint8_t keep[STORE_ID_SIZE], pinned[STORE_ID_SIZE], unsealed[STORE_ID_SIZE];
    store_object_t o;
    make_id(keep, 1);
    make_id(pinned, 2);
    make_id(unsealed, 3);
    EXPECT_RC(store_create(s, keep, 1000, 0, 0, &o), STORE_OK);
    EXPECT_RC(store_seal_release(s, &o), STORE_OK);
    EXPECT_RC(store_create(s, pinned, 1000, 0, 0, &o), STORE_OK);
    EXPECT_RC(store_seal_release(s, &o), STORE_OK);
    pid_t pid = fork();
    if (pid == 0) {
        store_t *c = NULL;
        store_object_t g, w;
        if (store_attach(fd, &c) != STORE_OK) _exit(2);
        if (store_get(c, pinned, 0, &g, NULL) != STORE_OK) _exit(3);
        if (store_create(c, unsealed, 5000, 0, 0, &w) != STORE_OK) _exit(4);
        store_debug_lock_and_hold(c);
        _exit(0); /* dies holding the lock, a pin and an unsealed object */
    }
    int status;
    waitpid(pid, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK); /* recovers, then reaps the dead child */
    EXPECT(st.num_recoveries == 1);
    EXPECT(st.bytes_pinned == 0 && st.num_created == 0 && st.num_sealed == 2);
    EXPECT(st.num_clients == 1);
    int in;
    store_contains(s, keep, &in);
    EXPECT(in == 1);
    check_valid(s);
    store_detach(s);
    close(fd);
}

static void test_forked_handle_is_refused(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    pid_t pid = fork();
    if (pid == 0) {
        int in;
        uint8_t id[STORE_ID_SIZE];
        make_id(id, 1);
        _exit(store_contains(s, id, &in) == STORE_E_FORKED ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    store_detach(s);
    close(fd);
}

static void test_parallel_copy(void) {
    size_t n = (size_t)40 << 20;
    uint8_t *a = malloc(n), *b = malloc(n);
    for (size_t i = 0; i < n; i++) a[i] = (uint8_t)(i * 7);
    store_parallel_copy(b, a, n, 3);
    EXPECT(memcmp(a, b, n) == 0);
    store_parallel_copy(b, a + 1, 1000, 4);
    EXPECT(memcmp(a + 1, b, 1000) == 0);
    /* n/threads a multiple of the page size, plus a tail: the tail must be copied */
    size_t m = (size_t)3 * (8u << 20) + 1;
    memset(b, 0, n);
    store_parallel_copy(b, a, m, 3);
    EXPECT(memcmp(a, b, m) == 0);
    memset(b, 0, n);
    store_parallel_copy(b, a, n, -5); /* nonsense thread counts copy on one thread */
    EXPECT(memcmp(a, b, n) == 0);
    free(a);
    free(b);
}

static void test_limits(void) {
    int fd = -1;
    EXPECT_RC(store_segment_create(1 << 20, 3000000000u, &fd), STORE_E_INVALID);
    store_t *s = open_store(1 << 20, 64, &fd);
    uint8_t id[STORE_ID_SIZE];
    store_object_t o, g;
    make_id(id, 7);
    EXPECT_RC(store_create(s, id, 8, 0, 0, &o), STORE_OK);
    EXPECT_RC(store_seal(s, id), STORE_OK);
    /* a huge timeout means forever, and must not overflow into "expired" */
    EXPECT_RC(store_get(s, id, INT64_MAX, &g, NULL), STORE_OK);
    EXPECT_RC(store_release(s, &g), STORE_OK);
    EXPECT_RC(store_release(s, &o), STORE_OK);
    store_detach(s);
    close(fd);
}

int main(void) {
    test_lifecycle();
    test_eviction_and_full();
    for (unsigned seed = 1; seed <= 3; seed++) test_random(seed);
    test_threads();
    test_child_dies_holding_lock_and_pins();
    test_forked_handle_is_refused();
    test_parallel_copy();
    test_limits();
    return report("store");
}
