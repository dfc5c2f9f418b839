/*
 * store.c - the object lifecycle: create -> seal | abort, get -> release,
 * delete, eviction, statistics. Each operation is one short critical section
 * under the segment lock; copying object data happens outside it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "clock.h"
#include "internal.h"
#include "table.h"

static void describe(struct store *s, uint32_t i, store_object_t *out) {
    entry_t *e = entry_at(s, i);
    out->index = i;
    out->generation = e->generation;
    out->data = s->data + e->block + BLOCK_HEADER;
    out->data_size = e->data_size;
    out->metadata = out->data + e->data_size;
    out->metadata_size = e->metadata_size;
    out->location = e->location; /* a restored object's copy on disk, or STORE_NO_LOCATION */
}

/* A SPILLED object: its sizes and location, no memory. */
static void describe_spilled(struct store *s, uint32_t i, store_object_t *out) {
    entry_t *e = entry_at(s, i);
    out->index = i;
    out->generation = e->generation;
    out->data = out->metadata = 0;
    out->data_size = e->data_size;
    out->metadata_size = e->metadata_size;
    out->location = e->location;
}

static inline int readable(uint32_t state) { return state == ENTRY_SEALED || state == ENTRY_SPILLED; }

static void pin_local(struct store *s, uint32_t i) {
    if (s->local_pins[i]++ == 0) table_pin(s, i, s->slot);
}

/* Free the least recently used evictable object; 0 if there is none. */
static int evict_one(struct store *s) {
    uint32_t i = s->h->lru_head;
    if (i == NONE32) return 0;
    table_free_object(s, i);
    s->h->c.num_evictions++;
    return 1;
}

static uint64_t alloc_block(struct store *s, uint64_t size) {
    for (int reaped = 0;; reaped = 1) {
        uint64_t off = arena_alloc(s, size, NONE32);
        while (off == NONE64 && evict_one(s)) off = arena_alloc(s, size, NONE32);
        if (off != NONE64 || reaped) return off;
        /* Dead processes may still pin memory: free it and try once more. */
        if (reap_dead_locked(s) == 0) return NONE64;
    }
}

static uint32_t alloc_entry(struct store *s) {
    uint32_t i = table_entry_alloc(s);
    while (i == NONE32 && evict_one(s)) i = table_entry_alloc(s);
    if (i == NONE32 && reap_dead_locked(s) > 0) i = table_entry_alloc(s);
    return i;
}

store_status_t store_create(store_t *s, const uint8_t *id, uint64_t data_size,
                            uint64_t metadata_size, uint32_t flags, store_object_t *out) {
    CHECK(s);
    if (data_size > (1ULL << 46) || metadata_size > (1ULL << 46) || (flags & ~(STORE_EVICTABLE | STORE_TAG(0xff))))
        return STORE_E_INVALID;
    uint64_t size = block_size_for(data_size + metadata_size);
    if (size > s->h->data_size) return STORE_E_TOO_LARGE;
    LOCK(s);
    store_status_t rc = STORE_OK;
    if (table_lookup(s, id) != NONE32) {
        rc = STORE_E_EXISTS;
        goto out;
    }
    uint64_t off = alloc_block(s, size);
    if (off == NONE64) {
        rc = STORE_E_FULL;
        goto out;
    }
    CRASH_POINT(STORE_CRASH_CREATE_AFTER_ALLOC);
    uint32_t i = alloc_entry(s);
    if (i == NONE32) {
        arena_free(s, off);
        rc = STORE_E_TABLE_FULL;
        goto out;
    }
    entry_t *e = entry_at(s, i);
    memcpy(e->id, id, STORE_ID_SIZE);
    e->data_size = data_size;
    e->metadata_size = metadata_size;
    e->block = off;
    e->block_size = block_at(s, off)->size;
    block_at(s, off)->entry = i;
    e->creator = (uint16_t)s->slot;
    e->flags = (uint16_t)(((flags & STORE_EVICTABLE) ? ENTRY_EVICTABLE : 0) | (flags & STORE_TAG(0xff)));
    e->location = STORE_NO_LOCATION;
    e->lru_prev = e->lru_next = NONE32;
    e->npins = 0;
    memset(e->pins, 0, sizeof e->pins);
    s->h->c.bytes_in_use += e->block_size;
    table_set_state(s, i, ENTRY_CREATED); /* the entry is now real */
    CRASH_POINT(STORE_CRASH_CREATE_BEFORE_INDEX);
    table_index_insert(s, i);
    pin_local(s, i);
    describe(s, i, out);
    if (s->h->spill_watermark && s->h->c.bytes_in_use > s->h->spill_watermark) call_spiller_locked(s);
out:
    seg_unlock(s);
    return rc;
}

/* Find a CREATED object of this process by ID. */
static store_status_t find_own_created(struct store *s, const uint8_t *id, uint32_t *out) {
    uint32_t i = table_lookup(s, id);
    if (i == NONE32) return STORE_E_NOT_FOUND;
    entry_t *e = entry_at(s, i);
    if (e->state != ENTRY_CREATED) return STORE_E_STATE;
    if (e->creator != s->slot) return STORE_E_NOT_OWNER;
    *out = i;
    return STORE_OK;
}

void signal_seal_locked(struct store *s, const uint8_t *id) {
    header_t *h = s->h;
    int b = wait_bucket(id);
    atomic_fetch_add(&h->seal_bucket[b], 1);
    atomic_fetch_add(&h->seal_any, 1);
    CRASH_POINT(STORE_CRASH_SEAL_BEFORE_WAKE);
    /* Woken under the lock: if this process dies here, the next locker's
     * recovery wakes everyone, so no waiter sleeps through a seal. */
    if (h->waiters[b]) futex_wake_all(&h->seal_bucket[b]);
    if (h->waiters[WAIT_ANY]) futex_wake_all(&h->seal_any);
}

store_status_t store_seal(store_t *s, const uint8_t *id) {
    CHECK(s);
    LOCK(s);
    uint32_t i;
    store_status_t rc = find_own_created(s, id, &i);
    if (rc == STORE_OK) {
        table_set_state(s, i, ENTRY_SEALED);
        signal_seal_locked(s, id);
    }
    seg_unlock(s);
    return rc;
}

static int owns_handle(struct store *s, const store_object_t *obj) {
    if (obj->index >= s->h->entry_hwm) return 0;
    entry_t *e = entry_at(s, obj->index);
    return e->generation == obj->generation && e->state != ENTRY_FREE && s->local_pins[obj->index];
}

int store_is_writable(store_t *s, const store_object_t *obj) {
    if (handle_check(s) != STORE_OK || seg_lock(s) != STORE_OK) return 0;
    int writable = owns_handle(s, obj) && entry_at(s, obj->index)->state == ENTRY_CREATED;
    seg_unlock(s);
    return writable;
}

store_status_t store_seal_release(store_t *s, const store_object_t *obj) {
    CHECK(s);
    LOCK(s);
    store_status_t rc = STORE_OK;
    uint32_t i = obj->index;
    if (!owns_handle(s, obj)) {
        rc = STORE_E_INVALID;
    } else if (entry_at(s, i)->state != ENTRY_CREATED) {
        rc = STORE_E_STATE;
    } else {
        table_set_state(s, i, ENTRY_SEALED);
        signal_seal_locked(s, entry_at(s, i)->id);
        if (--s->local_pins[i] == 0) table_unpin(s, i, s->slot);
    }
    seg_unlock(s);
    return rc;
}

store_status_t store_abort(store_t *s, const uint8_t *id) {
    CHECK(s);
    LOCK(s);
    uint32_t i;
    store_status_t rc = find_own_created(s, id, &i);
    if (rc == STORE_OK) {
        s->local_pins[i] = 0;
        table_free_object(s, i);
    }
    seg_unlock(s);
    return rc;
}

/* Waits are cut into slices that end by taking the lock again: if the
 * process that should wake us died inside the lock, the robust mutex makes
 * this waiter recover the segment (and wake everyone) within a slice. */
#define WAIT_SLICE_NS 1000000000LL


/* Timeouts beyond about 31 years mean forever (and cannot overflow ns). */
static int64_t clamp_timeout(int64_t timeout_ms) {
    return timeout_ms > 1000000000000LL ? -1 : timeout_ms;
}


void store_set_wait_spin(store_t *s, int64_t ns) {
    if (s) s->wait_spin_ns = ns < 0 ? 0 : ns;
}

store_status_t store_get(store_t *s, const uint8_t *id, int64_t timeout_ms, store_object_t *out,
                         int *exists_out) {
    CHECK(s);
    timeout_ms = clamp_timeout(timeout_ms);
    header_t *h = s->h;
    int64_t deadline = timeout_ms > 0 ? now_ns() + timeout_ms * 1000000 : 0;
    int b = wait_bucket(id), interrupted = 0, spun = 0;
    LOCK(s);
    for (;;) {
        uint32_t i = table_lookup(s, id);
        if (i != NONE32 && entry_at(s, i)->state == ENTRY_SEALED) {
            pin_local(s, i);
            describe(s, i, out);
            seg_unlock(s);
            return STORE_OK;
        }
        if (i != NONE32 && entry_at(s, i)->state == ENTRY_SPILLED) {
            describe_spilled(s, i, out);
            seg_unlock(s);
            return STORE_SPILLED;
        }
        if (exists_out) *exists_out = i != NONE32;
        if (timeout_ms == 0) {
            seg_unlock(s);
            return i == NONE32 ? STORE_E_NOT_FOUND : STORE_E_TIMEOUT;
        }
        if (interrupted) {
            seg_unlock(s);
            return STORE_E_INTERRUPTED;
        }
        int64_t left = WAIT_SLICE_NS;
        if (timeout_ms > 0 && (left = deadline - now_ns()) <= 0) {
            seg_unlock(s);
            return STORE_E_TIMEOUT;
        }
        if (left > WAIT_SLICE_NS) left = WAIT_SLICE_NS;
        uint32_t seq = atomic_load(&h->seal_bucket[b]);
        if (!spun && s->wait_spin_ns > 0) {
            /* Once per call: watch the bucket's seal counter without the lock
             * (and without registering as a waiter, so a sealer makes no
             * futex call), then look again. */
            spun = 1;
            seg_unlock(s);
            int64_t end = now_ns() + (s->wait_spin_ns < left ? s->wait_spin_ns : left);
            while (atomic_load_explicit(&h->seal_bucket[b], memory_order_acquire) == seq) {
                for (int k = 0; k < 32; k++) cpu_relax();
                if (now_ns() >= end) break;
            }
            LOCK(s);
            continue;
        }
        h->waiters[b]++;
        s->slots[s->slot].waits[b]++;
        seg_unlock(s);
        int err = futex_wait(&h->seal_bucket[b], seq, left);
        store_status_t lrc = seg_lock(s);
        if (lrc != STORE_OK) return lrc;
        h->waiters[b]--;
        s->slots[s->slot].waits[b]--;
        interrupted = err == EINTR;
    }
}

store_status_t store_release(store_t *s, const store_object_t *obj) {
    CHECK(s);
    if (obj->index >= s->h->max_entries) return STORE_E_INVALID;
    LOCK(s);
    store_status_t rc = STORE_OK;
    uint32_t i = obj->index;
    if (!owns_handle(s, obj)) {
        rc = STORE_E_INVALID;
    } else if (entry_at(s, i)->state == ENTRY_CREATED) {
        rc = STORE_E_STATE; /* seal or abort it first */
    } else if (--s->local_pins[i] == 0) {
        table_unpin(s, i, s->slot);
    }
    seg_unlock(s);
    return rc;
}

store_status_t store_delete(store_t *s, const uint8_t *id, uint64_t *location_out) {
    CHECK(s);
    if (location_out) *location_out = STORE_NO_LOCATION;
    LOCK(s);
    store_status_t rc = STORE_OK;
    uint32_t i = table_lookup(s, id);
    entry_t *e = i == NONE32 ? 0 : entry_at(s, i);
    if (i == NONE32) {
        rc = STORE_E_NOT_FOUND;
    } else if (e->state != ENTRY_SEALED && e->state != ENTRY_SPILLED) {
        rc = STORE_E_STATE;
    } else {
        /* Spilled, or restored with its copy still on disk: the caller
         * disposes of the bytes there. */
        if (location_out) *location_out = e->location;
        e->location = STORE_NO_LOCATION;
        if (e->state == ENTRY_SPILLED || e->npins == 0) {
            table_free_object(s, i);
        } else { /* readers still hold it: hide it now, free it at the last release */
            table_index_remove(s, i);
            table_lru_remove(s, i);
            table_set_state(s, i, ENTRY_DELETED);
        }
    }
    seg_unlock(s);
    return rc;
}

store_status_t store_contains(store_t *s, const uint8_t *id, int *out) {
    CHECK(s);
    LOCK(s);
    uint32_t i = table_lookup(s, id);
    *out = i != NONE32 && readable(entry_at(s, i)->state);
    seg_unlock(s);
    return STORE_OK;
}

store_status_t store_count_sealed(store_t *s, const uint8_t *ids, size_t n, uint8_t *ready_out,
                                  size_t *count_out) {
    CHECK(s);
    LOCK(s);
    size_t count = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t i = table_lookup(s, ids + k * STORE_ID_SIZE);
        int ready = i != NONE32 && readable(entry_at(s, i)->state);
        if (ready_out) ready_out[k] = (uint8_t)ready;
        count += (size_t)ready;
    }
    seg_unlock(s);
    *count_out = count;
    return STORE_OK;
}

uint32_t store_seal_sequence(store_t *s) { return atomic_load(&s->h->seal_any); }

store_status_t wait_word(struct store *s, _Atomic uint32_t *word, int w, uint32_t seq,
                         int64_t timeout_ms) {
    CHECK(s);
    timeout_ms = clamp_timeout(timeout_ms);
    header_t *h = s->h;
    int64_t deadline = timeout_ms > 0 ? now_ns() + timeout_ms * 1000000 : 0;
    int err = 0;
    if (timeout_ms == 0) return atomic_load(word) != seq ? STORE_OK : STORE_E_TIMEOUT;
    LOCK(s);
    while (atomic_load(word) == seq && err != EINTR) {
        int64_t left = WAIT_SLICE_NS;
        if (timeout_ms > 0 && (left = deadline - now_ns()) <= 0) break;
        if (left > WAIT_SLICE_NS) left = WAIT_SLICE_NS;
        h->waiters[w]++;
        s->slots[s->slot].waits[w]++;
        seg_unlock(s);
        err = futex_wait(word, seq, left);
        LOCK(s);
        h->waiters[w]--;
        s->slots[s->slot].waits[w]--;
    }
    seg_unlock(s);
    if (atomic_load(word) != seq) return STORE_OK;
    return err == EINTR ? STORE_E_INTERRUPTED : STORE_E_TIMEOUT;
}

store_status_t store_wait_seal_after(store_t *s, uint32_t seq, int64_t timeout_ms) {
    CHECK(s);
    return wait_word(s, &s->h->seal_any, WAIT_ANY, seq, timeout_ms);
}

store_status_t store_evict(store_t *s, uint64_t bytes, uint64_t *freed_out) {
    CHECK(s);
    LOCK(s);
    uint64_t freed = 0;
    while (freed < bytes && s->h->lru_head != NONE32) {
        freed += entry_at(s, s->h->lru_head)->block_size;
        evict_one(s);
    }
    seg_unlock(s);
    if (freed_out) *freed_out = freed;
    return STORE_OK;
}

store_status_t store_reap_dead_clients(store_t *s, uint32_t *n_out) {
    CHECK(s);
    LOCK(s);
    uint32_t n = reap_dead_locked(s);
    seg_unlock(s);
    if (n_out) *n_out = n;
    return STORE_OK;
}

store_status_t store_stats(store_t *s, store_stats_t *out) {
    CHECK(s);
    LOCK(s);
    header_t *h = s->h;
    out->capacity_bytes = h->data_size;
    out->bytes_in_use = h->c.bytes_in_use;
    out->bytes_pinned = h->c.bytes_pinned;
    out->bytes_evictable = h->c.bytes_evictable;
    out->num_created = h->c.num_created;
    out->num_sealed = h->c.num_sealed;
    out->num_deleted_pinned = h->c.num_deleted_pinned;
    out->num_evictions = h->c.num_evictions;
    out->num_recoveries = h->c.num_recoveries;
    out->max_objects = h->max_entries;
    uint64_t largest = arena_largest_free(s);
    out->largest_free_block = largest > BLOCK_HEADER ? largest - BLOCK_HEADER : 0;
    uint64_t clients = 0;
    for (int k = 0; k < STORE_MAX_CLIENTS; k++) clients += s->slots[k].used;
    out->num_clients = clients;
    out->bytes_spillable = h->c.bytes_spillable;
    out->num_spilled = h->c.num_spilled;
    out->bytes_spilled = h->c.bytes_spilled;
    out->num_fallback = h->c.num_fallback;
    out->spill_watermark = h->spill_watermark;
    seg_unlock(s);
    return STORE_OK;
}

store_status_t store_debug_lock_and_hold(store_t *s) {
    CHECK(s);
    return seg_lock(s);
}

void release_own_locked(struct store *s) {
    uint32_t hwm = s->h->entry_hwm;
    for (uint32_t i = 0; i < hwm; i++) {
        if (s->local_pins[i] == 0) continue;
        s->local_pins[i] = 0;
        entry_t *e = entry_at(s, i);
        if (e->state == ENTRY_CREATED && e->creator == s->slot) table_free_object(s, i);
        else table_unpin(s, i, s->slot);
    }
}
