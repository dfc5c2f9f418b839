/*
 * test_spill.c - the store's side of spilling, without Python: SPILLED
 * objects, candidates, the spiller's signals, fallback objects, listing,
 * recovery with spilled entries, and a random sequence checked against
 * store_validate. Built and run by tests/test_c_core.py.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void put(store_t *s, uint64_t n, uint64_t size, uint32_t flags) {
    uint8_t id[STORE_ID_SIZE];
    store_object_t o;
    make_id(id, n);
    EXPECT_RC(store_create(s, id, size, 3, flags, &o), STORE_OK);
    if (size) memset(o.data, (int)n, size);
    memcpy(o.metadata, "abc", 3);
    EXPECT_RC(store_seal_release(s, &o), STORE_OK);
}

/* Pin object n and mark it spilled at `location`. */
static store_status_t spill(store_t *s, uint64_t n, uint64_t location) {
    uint8_t id[STORE_ID_SIZE];
    store_object_t o;
    make_id(id, n);
    store_status_t rc = store_get(s, id, 0, &o, NULL);
    if (rc != STORE_OK) return rc;
    rc = store_mark_spilled(s, &o, location);
    if (rc != STORE_OK) store_release(s, &o);
    return rc;
}

static void test_spill_and_delete(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    uint8_t id[STORE_ID_SIZE];
    store_object_t g;
    put(s, 1, 1000, 0);
    store_stats_t before, st;
    EXPECT_RC(store_stats(s, &before), STORE_OK);
    EXPECT(before.bytes_spillable == before.bytes_in_use);
    EXPECT_RC(spill(s, 1, 42), STORE_OK);
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.bytes_in_use == 0 && st.bytes_pinned == 0 && st.bytes_spillable == 0);
    EXPECT(st.num_spilled == 1 && st.bytes_spilled == 1003 && st.num_sealed == 0 && st.num_fallback == 0);
    make_id(id, 1);
    int in = 0;
    EXPECT_RC(store_contains(s, id, &in), STORE_OK);
    EXPECT(in == 1); /* still there for every reader */
    uint8_t ready = 0;
    size_t count = 0;
    EXPECT_RC(store_count_sealed(s, id, 1, &ready, &count), STORE_OK);
    EXPECT(ready == 1 && count == 1);
    EXPECT_RC(store_get(s, id, 0, &g, NULL), STORE_SPILLED);
    EXPECT(g.location == 42 && g.data == NULL && g.data_size == 1000 && g.metadata_size == 3);
    EXPECT_RC(store_get(s, id, -1, &g, NULL), STORE_SPILLED); /* no wait either */
    EXPECT_RC(store_create(s, id, 10, 0, 0, &g), STORE_E_EXISTS);
    check_valid(s);
    uint64_t where = 0;
    EXPECT_RC(store_delete(s, id, &where), STORE_OK);
    EXPECT(where == 42);
    EXPECT_RC(store_contains(s, id, &in), STORE_OK);
    EXPECT(in == 0);
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_spilled == 0 && st.bytes_spilled == 0);
    put(s, 2, 10, 0);
    make_id(id, 2);
    EXPECT_RC(store_delete(s, id, &where), STORE_OK);
    EXPECT(where == STORE_NO_LOCATION);
    check_valid(s);
    store_detach(s);
    close(fd);
}

static void test_busy_and_stale(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd), *other = NULL;
    EXPECT_RC(store_attach(fd, &other), STORE_OK); /* another client, as another process */
    uint8_t id[STORE_ID_SIZE];
    store_object_t a, b, c;
    put(s, 1, 500, 0);
    make_id(id, 1);
    EXPECT_RC(store_get(s, id, 0, &a, NULL), STORE_OK);
    EXPECT_RC(store_get(s, id, 0, &b, NULL), STORE_OK); /* a second buffer in this process */
    EXPECT_RC(store_mark_spilled(s, &a, 7), STORE_E_BUSY);
    EXPECT_RC(store_release(s, &b), STORE_OK);
    EXPECT_RC(store_get(other, id, 0, &c, NULL), STORE_OK); /* another reader */
    EXPECT_RC(store_mark_spilled(s, &a, 7), STORE_E_BUSY);
    EXPECT_RC(store_release(other, &c), STORE_OK);
    EXPECT_RC(store_mark_spilled(s, &a, STORE_NO_LOCATION), STORE_E_INVALID);
    EXPECT_RC(store_mark_spilled(s, &a, 7), STORE_OK);
    EXPECT_RC(store_mark_spilled(s, &a, 8), STORE_E_INVALID); /* already done */
    EXPECT_RC(store_get(other, id, 0, &c, NULL), STORE_SPILLED);
    EXPECT(c.location == 7);
    /* Deleted while the spiller held it: not spilled, freed at its release. */
    put(s, 4, 500, 0);
    make_id(id, 4);
    EXPECT_RC(store_get(s, id, 0, &a, NULL), STORE_OK);
    EXPECT_RC(store_delete(s, id, NULL), STORE_OK);
    EXPECT_RC(store_mark_spilled(s, &a, 7), STORE_E_NOT_FOUND);
    EXPECT_RC(store_release(s, &a), STORE_OK);
    /* A handle whose object was deleted and whose entry was reused. */
    put(s, 2, 500, 0);
    make_id(id, 2);
    EXPECT_RC(store_get(s, id, 0, &a, NULL), STORE_OK);
    store_object_t stale = a;
    EXPECT_RC(store_release(s, &a), STORE_OK);
    EXPECT_RC(store_delete(s, id, NULL), STORE_OK);
    put(s, 3, 500, 0);
    EXPECT_RC(store_mark_spilled(s, &stale, 9), STORE_E_INVALID);
    check_valid(s);
    store_detach(other);
    store_detach(s);
    close(fd);
}

static void test_candidates(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    uint8_t ids[8 * STORE_ID_SIZE], id[STORE_ID_SIZE];
    uint64_t sizes[8];
    size_t n = 0;
    store_object_t g, w;
    for (uint64_t k = 1; k <= 3; k++) put(s, k, 1000, 0);
    put(s, 4, 1000, STORE_EVICTABLE); /* evicted, never spilled */
    make_id(id, 5);
    EXPECT_RC(store_create(s, id, 100, 0, 0, &w), STORE_OK); /* unsealed: not a candidate */
    make_id(id, 1);
    EXPECT_RC(store_get(s, id, 0, &g, NULL), STORE_OK);
    EXPECT_RC(store_spill_candidates(s, UINT64_MAX, 8, ids, sizes, &n), STORE_OK);
    EXPECT(n == 2); /* 1 is pinned */
    EXPECT_RC(store_release(s, &g), STORE_OK); /* 1 is now the most recently used */
    EXPECT_RC(store_spill_candidates(s, UINT64_MAX, 8, ids, sizes, &n), STORE_OK);
    EXPECT(n == 3);
    make_id(id, 2);
    EXPECT(memcmp(ids, id, STORE_ID_SIZE) == 0);
    make_id(id, 1);
    EXPECT(memcmp(ids + 2 * STORE_ID_SIZE, id, STORE_ID_SIZE) == 0);
    EXPECT(sizes[0] >= 1003 && sizes[0] % STORE_ALIGNMENT == 0);
    EXPECT_RC(store_spill_candidates(s, 1, 8, ids, sizes, &n), STORE_OK);
    EXPECT(n == 1); /* enough bytes after the first */
    EXPECT_RC(store_spill_candidates(s, UINT64_MAX, 2, ids, sizes, &n), STORE_OK);
    EXPECT(n == 2);
    EXPECT_RC(spill(s, 2, 1), STORE_OK);
    EXPECT_RC(store_spill_candidates(s, UINT64_MAX, 8, ids, sizes, &n), STORE_OK);
    EXPECT(n == 2);
    make_id(id, 5);
    EXPECT_RC(store_abort(s, id), STORE_OK);
    check_valid(s);
    store_detach(s);
    close(fd);
}

typedef struct {
    store_t *s;
    uint8_t id[STORE_ID_SIZE];
    store_status_t rc;
    uint64_t location;
    uint32_t done;
    int exhausted;
} waiter_t;

static void *wait_get(void *p) {
    waiter_t *w = p;
    store_object_t o;
    w->rc = store_get(w->s, w->id, 10000, &o, NULL);
    w->location = o.location;
    return NULL;
}

static void *wait_room(void *p) {
    waiter_t *w = p;
    w->rc = store_wait_space(w->s, w->done, 10000, &w->exhausted);
    return NULL;
}

static void test_fallback_object(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    waiter_t w = {.s = s};
    make_id(w.id, 77);
    pthread_t t;
    pthread_create(&t, NULL, wait_get, &w);
    EXPECT_RC(store_create_spilled(s, w.id, (uint64_t)5 << 30, 3, 1234, STORE_TAG(9)), STORE_OK);
    pthread_join(t, NULL); /* the waiter is woken by it */
    EXPECT(w.rc == STORE_SPILLED && w.location == 1234);
    EXPECT_RC(store_create_spilled(s, w.id, 1, 0, 5, 0), STORE_E_EXISTS);
    EXPECT_RC(store_create_spilled(s, w.id, 1, 0, STORE_NO_LOCATION, 0), STORE_E_INVALID);
    EXPECT_RC(store_create_spilled(s, w.id, 1, 0, 5, STORE_EVICTABLE), STORE_E_INVALID);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_spilled == 1 && st.num_fallback == 1 && st.bytes_in_use == 0);
    EXPECT(st.bytes_spilled == ((uint64_t)5 << 30) + 3);
    store_object_info_t info[4];
    uint32_t cursor = 0;
    size_t n = 0;
    EXPECT_RC(store_list_objects(s, &cursor, info, 4, &n), STORE_OK);
    EXPECT(n == 1 && cursor == 0 && info[0].state == 4 && info[0].location == 1234);
    EXPECT(info[0].flags == (STORE_TAG(9) | 0x4));
    check_valid(s);
    uint64_t where;
    EXPECT_RC(store_delete(s, w.id, &where), STORE_OK);
    EXPECT(where == 1234);
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_spilled == 0 && st.num_fallback == 0 && st.bytes_spilled == 0);
    check_valid(s);
    store_detach(s);
    close(fd);
}

static void test_signals(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    uint32_t seq = 0, done = 0;
    uint64_t wanted = 0;
    /* Nothing asked yet: a wait with no time returns at once. */
    EXPECT_RC(store_spill_wait(s, 0, 0, &seq, &wanted), STORE_E_TIMEOUT);
    EXPECT(wanted == 0);
    store_set_spill_watermark(s, 100 << 10);
    put(s, 1, 50 << 10, 0); /* under the watermark: no call */
    EXPECT_RC(store_spill_wait(s, seq, 0, &seq, &wanted), STORE_E_TIMEOUT);
    put(s, 2, 80 << 10, 0); /* over it */
    EXPECT_RC(store_spill_wait(s, seq, 1000, &seq, &wanted), STORE_OK);
    EXPECT(wanted == 0);
    EXPECT_RC(store_request_space(s, 5000, &done), STORE_OK);
    EXPECT_RC(store_request_space(s, 3000, &done), STORE_OK); /* the larger ask stays */
    EXPECT_RC(store_spill_wait(s, seq, 1000, &seq, &wanted), STORE_OK);
    EXPECT(wanted == 5000);
    EXPECT_RC(store_spill_wait(s, seq, 0, &seq, &wanted), STORE_E_TIMEOUT);
    EXPECT(wanted == 0); /* taken */
    /* A creator waiting for room wakes at the end of the next round. */
    waiter_t w = {.s = s, .done = done};
    pthread_t t;
    pthread_create(&t, NULL, wait_room, &w);
    EXPECT_RC(store_spill_round_done(s, 1), STORE_OK);
    pthread_join(t, NULL);
    EXPECT(w.rc == STORE_OK && w.exhausted == 1);
    int exhausted = 0;
    EXPECT_RC(store_wait_space(s, done, 0, &exhausted), STORE_OK); /* already past */
    EXPECT_RC(store_request_space(s, 1, &done), STORE_OK);
    EXPECT_RC(store_wait_space(s, done, 20, &exhausted), STORE_E_TIMEOUT);
    EXPECT(exhausted == 0);
    EXPECT_RC(store_spill_round_done(s, 0), STORE_OK);
    EXPECT_RC(store_wait_space(s, done, 1000, &exhausted), STORE_OK);
    EXPECT(exhausted == 0);
    EXPECT(store_unique_number(s) == 1 && store_unique_number(s) == 2);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.spill_watermark == 100 << 10);
    check_valid(s);
    store_detach(s);
    close(fd);
}

static void test_listing(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    for (uint64_t k = 1; k <= 10; k++) put(s, k, 100 * k, STORE_TAG(k));
    EXPECT_RC(spill(s, 3, 33), STORE_OK);
    store_object_info_t info[4];
    uint32_t cursor = 0;
    size_t n = 0, total = 0, spilled = 0, pages = 0;
    int32_t pids[STORE_MAX_CLIENTS];
    EXPECT_RC(store_client_pids(s, pids), STORE_OK);
    EXPECT(pids[store_client_slot(s)] == getpid());
    do {
        EXPECT_RC(store_list_objects(s, &cursor, info, 4, &n), STORE_OK);
        for (size_t k = 0; k < n; k++) {
            uint64_t num;
            memcpy(&num, info[k].id, sizeof num);
            EXPECT(info[k].flags == STORE_TAG(num) && info[k].data_size == 100 * num);
            if (info[k].state == 4) {
                spilled++;
                EXPECT(info[k].location == 33 && info[k].block_size == 0);
            }
        }
        total += n;
        pages++;
    } while (cursor != 0 && pages < 10);
    EXPECT(total == 10 && spilled == 1 && pages == 3);
    store_detach(s);
    close(fd);
}

static void test_recovery_keeps_spilled(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd);
    for (uint64_t k = 1; k <= 4; k++) put(s, k, 10000, 0);
    EXPECT_RC(spill(s, 1, 11), STORE_OK);
    EXPECT_RC(spill(s, 2, 22), STORE_OK);
    uint8_t id[STORE_ID_SIZE];
    make_id(id, 9);
    EXPECT_RC(store_create_spilled(s, id, 99, 0, 99, 0), STORE_OK);
    pid_t pid = fork();
    if (pid == 0) {
        store_t *c = NULL;
        if (store_attach(fd, &c) != STORE_OK) _exit(2);
        store_debug_lock_and_hold(c);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_recoveries == 1 && st.num_spilled == 3 && st.num_fallback == 1 && st.num_sealed == 2);
    EXPECT(st.bytes_spilled == 2 * 10003 + 99);
    store_object_t g;
    make_id(id, 2);
    EXPECT_RC(store_get(s, id, 0, &g, NULL), STORE_SPILLED);
    EXPECT(g.location == 22);
    uint8_t ids[4 * STORE_ID_SIZE];
    uint64_t sizes[4];
    size_t n;
    EXPECT_RC(store_spill_candidates(s, UINT64_MAX, 4, ids, sizes, &n), STORE_OK);
    EXPECT(n == 2); /* the spillable list is rebuilt */
    check_valid(s);
    store_detach(s);
    close(fd);
}

/* Restore spilled object n through a copy created under id 1000 + n. */
static store_status_t restore(store_t *s, uint64_t n, store_object_t *out) {
    uint8_t id[STORE_ID_SIZE], cid[STORE_ID_SIZE];
    store_object_t g, copy;
    make_id(id, n);
    make_id(cid, 1000 + n);
    store_status_t rc = store_get(s, id, 0, &g, NULL);
    if (rc != STORE_SPILLED) return rc;
    rc = store_create(s, cid, g.data_size, g.metadata_size, 0, &copy);
    if (rc != STORE_OK) return rc;
    if (g.data_size) memset(copy.data, (int)n, g.data_size);
    memcpy(copy.metadata, "abc", g.metadata_size < 3 ? g.metadata_size : 3);
    rc = store_restore_commit(s, id, &copy, out);
    if (rc != STORE_OK) store_abort(s, cid);
    return rc;
}

static void test_restore(void) {
    int fd;
    store_t *s = open_store(1 << 20, 128, &fd), *other = NULL;
    EXPECT_RC(store_attach(fd, &other), STORE_OK);
    uint8_t id[STORE_ID_SIZE];
    store_object_t o, g;
    put(s, 1, 5000, 0);
    EXPECT_RC(spill(s, 1, 77), STORE_OK);
    store_stats_t st;
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    uint64_t in_use = st.bytes_in_use;
    EXPECT_RC(restore(s, 1, &o), STORE_OK);
    EXPECT(o.location == 77 && o.data_size == 5000 && o.data[4999] == 1);
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_spilled == 0 && st.num_sealed == 1 && st.num_created == 0 && st.bytes_in_use > in_use);
    EXPECT(st.bytes_pinned == st.bytes_in_use);
    make_id(id, 1);
    EXPECT_RC(store_get(other, id, 0, &g, NULL), STORE_OK); /* every process reads it from memory */
    EXPECT(g.data[0] == 1 && g.location == 77);
    EXPECT_RC(store_release(other, &g), STORE_OK);
    make_id(id, 1001);
    int in = 1;
    EXPECT_RC(store_contains(s, id, &in), STORE_OK);
    EXPECT(in == 0); /* the copy's ID is gone */
    check_valid(s);
    EXPECT_RC(store_mark_spilled(s, &o, 78), STORE_E_INVALID); /* it has its own copy on disk */
    EXPECT_RC(store_mark_spilled(s, &o, 77), STORE_OK);        /* back to it, with no write */
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.num_spilled == 1 && st.bytes_in_use == in_use);
    /* Released, a restored object is the first candidate to spill again:
     * letting it go costs no write. */
    put(s, 3, 100, 0);
    EXPECT_RC(restore(s, 1, &o), STORE_OK);
    EXPECT_RC(store_release(s, &o), STORE_OK);
    uint8_t ids[4 * STORE_ID_SIZE];
    uint64_t sizes[4];
    size_t n = 0;
    EXPECT_RC(store_spill_candidates(s, UINT64_MAX, 4, ids, sizes, &n), STORE_OK);
    make_id(id, 1);
    EXPECT(n == 2 && memcmp(ids, id, STORE_ID_SIZE) == 0);
    check_valid(s);
    make_id(id, 3);
    EXPECT_RC(store_delete(s, id, NULL), STORE_OK);
    /* A second restorer loses the race; a deleted object cannot be restored. */
    put(s, 2, 300, 0);
    EXPECT_RC(spill(s, 2, 99), STORE_OK);
    uint8_t cid[STORE_ID_SIZE];
    make_id(cid, 2002); /* (restore() names its copy 1002) */
    store_object_t copy, copy2;
    EXPECT_RC(store_create(s, cid, 300, 3, 0, &copy), STORE_OK);
    EXPECT_RC(restore(other, 2, &g), STORE_OK); /* another process is quicker */
    make_id(id, 2);
    EXPECT_RC(store_restore_commit(s, id, &copy, &o), STORE_E_STATE);
    EXPECT_RC(store_abort(s, cid), STORE_OK);
    EXPECT_RC(store_release(other, &g), STORE_OK);
    EXPECT_RC(spill(s, 2, 99), STORE_OK);
    EXPECT_RC(store_create(s, cid, 300, 3, 0, &copy2), STORE_OK);
    uint64_t where = 0;
    EXPECT_RC(store_delete(s, id, &where), STORE_OK);
    EXPECT(where == 99);
    EXPECT_RC(store_restore_commit(s, id, &copy2, &o), STORE_E_NOT_FOUND);
    EXPECT_RC(store_abort(s, cid), STORE_OK);
    /* Deleting a restored object hands back its copy on disk, even while read. */
    EXPECT_RC(restore(s, 1, &o), STORE_OK);
    make_id(id, 1);
    EXPECT_RC(store_delete(s, id, &where), STORE_OK);
    EXPECT(where == 77 && o.data[100] == 1); /* the reader's memory stays until released */
    EXPECT_RC(store_release(s, &o), STORE_OK);
    EXPECT_RC(store_stats(s, &st), STORE_OK);
    EXPECT(st.bytes_in_use == 0 && st.num_sealed == 0 && st.num_spilled == 0);
    check_valid(s);
    store_detach(other);
    store_detach(s);
    close(fd);
}

static void test_random_with_spills(unsigned seed) {
    int fd;
    store_t *s = open_store(2 << 20, 256, &fd);
    enum { N = 150 };
    int state[N] = {0}; /* 0 none, 2 sealed, 4 spilled, 5 restored (sealed, its copy on disk kept) */
    uint8_t id[STORE_ID_SIZE];
    store_object_t o;
    srand(seed);
    for (int step = 0; step < 20000; step++) {
        int k = rand() % N;
        make_id(id, (uint64_t)k);
        int op = rand() % 5;
        if (op == 0 && state[k] == 0) {
            uint64_t size = (uint64_t)(rand() % 3 == 0 ? rand() % (200 << 10) : rand() % 300);
            store_status_t rc = store_create(s, id, size, 0, 0, &o);
            if (rc == STORE_OK) {
                if (size) o.data[size - 1] = (uint8_t)k;
                EXPECT_RC(store_seal_release(s, &o), STORE_OK);
                state[k] = 2;
            } else {
                EXPECT(rc == STORE_E_FULL || rc == STORE_E_TABLE_FULL);
            }
        } else if (op == 1 && state[k] == 2) {
            EXPECT_RC(spill(s, (uint64_t)k, (uint64_t)k), STORE_OK);
            state[k] = 4;
        } else if (op == 2 && state[k] != 0) {
            uint64_t where;
            EXPECT_RC(store_delete(s, id, &where), STORE_OK);
            EXPECT(where == (state[k] >= 4 ? (uint64_t)k : STORE_NO_LOCATION));
            state[k] = 0;
        } else if (op == 3 && state[k] != 0) {
            store_status_t rc = store_get(s, id, 0, &o, NULL);
            EXPECT(rc == (state[k] == 4 ? STORE_SPILLED : STORE_OK));
            if (rc == STORE_OK) EXPECT(o.location == (state[k] == 5 ? (uint64_t)k : STORE_NO_LOCATION));
            if (rc == STORE_OK) {
                EXPECT(o.data_size == 0 || o.data[o.data_size - 1] == (uint8_t)k);
                EXPECT_RC(store_release(s, &o), STORE_OK);
            }
        } else if (op == 4 && state[k] == 0 && rand() % 4 == 0) {
            EXPECT_RC(store_create_spilled(s, id, 10, 0, (uint64_t)k, 0), STORE_OK);
            state[k] = 4;
        } else if (op == 4 && state[k] == 4) {
            store_status_t rc = restore(s, (uint64_t)k, &o);
            if (rc == STORE_OK) { /* sealed again, keeping its place on disk */
                EXPECT(o.location == (uint64_t)k);
                EXPECT_RC(store_release(s, &o), STORE_OK);
                state[k] = 5;
            } else {
                EXPECT(rc == STORE_E_FULL || rc == STORE_E_TABLE_FULL);
            }
        } else if (op == 1 && state[k] == 5) {
            EXPECT_RC(spill(s, (uint64_t)k, (uint64_t)k), STORE_OK);
            state[k] = 4;
        }
        if (step % 500 == 0) check_valid(s);
    }
    check_valid(s);
    store_detach(s);
    close(fd);
}

int main(void) {
    test_spill_and_delete();
    test_busy_and_stale();
    test_candidates();
    test_fallback_object();
    test_signals();
    test_listing();
    test_recovery_keeps_spilled();
    test_restore();
    for (unsigned seed = 1; seed <= 3; seed++) test_random_with_spills(seed);
    return report("spill");
}
