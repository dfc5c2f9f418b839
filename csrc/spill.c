/*
 * spill.c - what the store does for spilling, and listing its objects.
 *
 * The runtime moves sealed objects out of the segment (into files); the
 * store only records where their bytes went, as an opaque `location`, and
 * keeps them visible by ID in state SPILLED (no block, no pins). It also
 * carries the two signals between the one process that spills and every
 * process that needs room:
 *
 *   spill_call   creators bump it (a create over the watermark, or
 *                store_request_space); the spiller sleeps on it
 *   spill_done   the spiller bumps it at the end of each round; creators
 *                waiting for room sleep on it
 *
 * Both are futex words in the header, so a wait never polls, and recovery
 * wakes their waiters like any other.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "arena.h"
#include "internal.h"
#include "table.h"

void call_spiller_locked(struct store *s) {
    header_t *h = s->h;
    atomic_fetch_add(&h->spill_call, 1);
    if (h->waiters[WAIT_SPILLER]) futex_wake_all(&h->spill_call);
}

store_status_t store_spill_candidates(store_t *s, uint64_t bytes, size_t max_n, uint8_t *ids_out,
                                      uint64_t *sizes_out, size_t *n_out) {
    CHECK(s);
    LOCK(s);
    size_t n = 0;
    uint64_t total = 0;
    for (uint32_t i = s->h->spill_head; i != NONE32 && n < max_n && total < bytes;
         i = entry_at(s, i)->lru_next) {
        entry_t *e = entry_at(s, i);
        memcpy(ids_out + n * STORE_ID_SIZE, e->id, STORE_ID_SIZE);
        sizes_out[n++] = e->block_size;
        total += e->block_size;
    }
    seg_unlock(s);
    *n_out = n;
    return STORE_OK;
}

store_status_t store_mark_spilled(store_t *s, const store_object_t *obj, uint64_t location) {
    CHECK(s);
    if (location == STORE_NO_LOCATION) return STORE_E_INVALID;
    LOCK(s);
    store_status_t rc = STORE_OK;
    uint32_t i = obj->index;
    entry_t *e = i < s->h->entry_hwm ? entry_at(s, i) : 0;
    if (!e || e->generation != obj->generation || s->local_pins[i] == 0 ||
        (e->state != ENTRY_SEALED && e->state != ENTRY_DELETED)) {
        rc = STORE_E_INVALID;
    } else if (e->state == ENTRY_DELETED) {
        rc = STORE_E_NOT_FOUND; /* deleted while we held it: freed at our release */
    } else if (e->location != STORE_NO_LOCATION && e->location != location) {
        rc = STORE_E_INVALID; /* a restored object goes back to its own copy on disk */
    } else if (s->local_pins[i] != 1 || e->npins != 1) {
        rc = STORE_E_BUSY; /* another buffer here, or another process, reads it */
    } else {
        /* Location first, then the state in one store: a crash in between
         * leaves a SEALED entry with its block, and recovery rebuilds the
         * allocator from SEALED entries only, so a SPILLED one's block
         * becomes free whatever happens after the state change. */
        e->location = location;
        s->local_pins[i] = 0;
        pin_clear(e, s->slot);
        e->npins = 0;
        s->h->c.bytes_pinned -= e->block_size;
        table_set_state(s, i, ENTRY_SPILLED);
        CRASH_POINT(STORE_CRASH_SPILL_AFTER_STATE);
        arena_free(s, e->block);
        s->h->c.bytes_in_use -= e->block_size;
        e->block_size = 0;
    }
    seg_unlock(s);
    return rc;
}

store_status_t store_create_spilled(store_t *s, const uint8_t *id, uint64_t data_size,
                                    uint64_t metadata_size, uint64_t location, uint32_t flags) {
    CHECK(s);
    if (data_size > (1ULL << 46) || metadata_size > (1ULL << 46) || location == STORE_NO_LOCATION ||
        (flags & ~STORE_TAG(0xff)))
        return STORE_E_INVALID;
    LOCK(s);
    store_status_t rc = STORE_OK;
    uint32_t i;
    if (table_lookup(s, id) != NONE32) {
        rc = STORE_E_EXISTS;
    } else if ((i = table_entry_alloc(s)) == NONE32) {
        rc = STORE_E_TABLE_FULL;
    } else {
        entry_t *e = entry_at(s, i);
        memcpy(e->id, id, STORE_ID_SIZE);
        e->data_size = data_size;
        e->metadata_size = metadata_size;
        e->block = 0;
        e->block_size = 0;
        e->creator = (uint16_t)s->slot;
        e->flags = (uint16_t)(ENTRY_FALLBACK | (flags & STORE_TAG(0xff)));
        e->location = location;
        e->lru_prev = e->lru_next = NONE32;
        e->npins = 0;
        memset(e->pins, 0, sizeof e->pins);
        table_set_state(s, i, ENTRY_SPILLED);
        table_index_insert(s, i);
        signal_seal_locked(s, id);
    }
    seg_unlock(s);
    return rc;
}

store_status_t store_restore_commit(store_t *s, const uint8_t *id, const store_object_t *copy,
                                    store_object_t *out) {
    CHECK(s);
    LOCK(s);
    store_status_t rc = STORE_OK;
    uint32_t i = table_lookup(s, id), j = copy->index;
    entry_t *e = i == NONE32 ? 0 : entry_at(s, i);
    entry_t *c = j < s->h->entry_hwm ? entry_at(s, j) : 0;
    if (!c || c->generation != copy->generation || c->state != ENTRY_CREATED || c->creator != s->slot ||
        s->local_pins[j] != 1 || c->npins != 1) {
        rc = STORE_E_INVALID;
    } else if (!e || e->state != ENTRY_SPILLED || e->data_size != c->data_size ||
               e->metadata_size != c->metadata_size) {
        rc = e ? STORE_E_STATE : STORE_E_NOT_FOUND; /* restored by another reader, or deleted */
    } else {
        /* Move the block from the copy's entry to the object's, in an order
         * where no instant has two entries owning it: the copy's entry goes
         * first (a crash then frees the block, and the object stays
         * spilled), then the object takes the block, its state flipping
         * last (recovery ignores the block fields of a SPILLED entry). */
        uint64_t block = c->block, size = c->block_size;
        table_index_remove(s, j);
        s->local_pins[j] = 0;
        memset(c->pins, 0, sizeof c->pins);
        c->npins = 0;
        s->h->c.bytes_pinned -= size;
        table_set_state(s, j, ENTRY_FREE);
        c->flags = 0;
        c->hnext = s->h->free_entries;
        s->h->free_entries = j;
        CRASH_POINT(STORE_CRASH_RESTORE_MID_MOVE);
        e->block = block;
        e->block_size = size;
        block_at(s, block)->entry = i;
        e->lru_prev = e->lru_next = NONE32;
        memset(e->pins, 0, sizeof e->pins);
        e->npins = 0;
        table_set_state(s, i, ENTRY_SEALED); /* its copy on disk stays: e->location */
        table_pin(s, i, s->slot);
        s->local_pins[i] = 1;
        out->index = i;
        out->generation = e->generation;
        out->data = s->data + block + BLOCK_HEADER;
        out->data_size = e->data_size;
        out->metadata = out->data + e->data_size;
        out->metadata_size = e->metadata_size;
        out->location = e->location;
    }
    seg_unlock(s);
    return rc;
}

void store_set_spill_watermark(store_t *s, uint64_t bytes) {
    if (handle_check(s) != STORE_OK || seg_lock(s) != STORE_OK) return;
    s->h->spill_watermark = bytes;
    if (bytes && s->h->c.bytes_in_use > bytes) call_spiller_locked(s);
    seg_unlock(s);
}

store_status_t store_request_space(store_t *s, uint64_t bytes, uint32_t *done_out) {
    CHECK(s);
    LOCK(s);
    header_t *h = s->h;
    if (bytes > h->spill_wanted) h->spill_wanted = bytes;
    *done_out = atomic_load(&h->spill_done);
    call_spiller_locked(s);
    seg_unlock(s);
    return STORE_OK;
}

store_status_t store_wait_space(store_t *s, uint32_t done, int64_t timeout_ms, int *exhausted_out) {
    CHECK(s);
    store_status_t rc = wait_word(s, &s->h->spill_done, WAIT_ROOM, done, timeout_ms);
    if (exhausted_out) {
        uint32_t now = atomic_load(&s->h->spill_done);
        *exhausted_out = rc == STORE_OK && s->h->spill_exhausted == now;
    }
    return rc;
}

store_status_t store_spill_wait(store_t *s, uint32_t seq, int64_t timeout_ms, uint32_t *seq_out,
                                uint64_t *wanted_out) {
    CHECK(s);
    store_status_t rc = wait_word(s, &s->h->spill_call, WAIT_SPILLER, seq, timeout_ms);
    if (rc == STORE_E_INTERRUPTED) return rc;
    LOCK(s);
    *seq_out = atomic_load(&s->h->spill_call);
    *wanted_out = s->h->spill_wanted;
    s->h->spill_wanted = 0;
    seg_unlock(s);
    return rc;
}

store_status_t store_spill_round_done(store_t *s, int exhausted) {
    CHECK(s);
    LOCK(s);
    header_t *h = s->h;
    uint32_t done = atomic_fetch_add(&h->spill_done, 1) + 1;
    if (exhausted) h->spill_exhausted = done;
    if (h->waiters[WAIT_ROOM]) futex_wake_all(&h->spill_done);
    seg_unlock(s);
    return STORE_OK;
}

uint64_t store_unique_number(store_t *s) {
    if (handle_check(s) != STORE_OK) return 0;
    return __atomic_add_fetch(&s->h->next_number, 1, __ATOMIC_RELAXED);
}

store_status_t store_list_objects(store_t *s, uint32_t *cursor, store_object_info_t *out,
                                  size_t max_n, size_t *n_out) {
    CHECK(s);
    LOCK(s);
    size_t n = 0;
    uint32_t i = *cursor, hwm = s->h->entry_hwm;
    for (; i < hwm && n < max_n; i++) {
        entry_t *e = entry_at(s, i);
        if (e->state == ENTRY_FREE) continue;
        store_object_info_t *o = &out[n++];
        memcpy(o->id, e->id, STORE_ID_SIZE);
        o->state = e->state;
        o->flags = (e->flags & (ENTRY_EVICTABLE | ENTRY_FALLBACK)) | (e->flags & STORE_TAG(0xff));
        o->npins = e->npins;
        o->data_size = e->data_size;
        o->metadata_size = e->metadata_size;
        o->block_size = e->state == ENTRY_SPILLED ? 0 : e->block_size;
        o->location = e->location;
        memcpy(o->pins, e->pins, sizeof o->pins);
    }
    *cursor = i < hwm ? i : 0;
    seg_unlock(s);
    *n_out = n;
    return STORE_OK;
}

store_status_t store_client_pids(store_t *s, int32_t *pids_out) {
    CHECK(s);
    LOCK(s);
    for (int k = 0; k < STORE_MAX_CLIENTS; k++) pids_out[k] = s->slots[k].used ? s->slots[k].pid : 0;
    seg_unlock(s);
    return STORE_OK;
}
