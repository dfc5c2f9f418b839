/* table.c - see table.h. */
#include <string.h>

#include "arena.h"
#include "internal.h"
#include "table.h"

uint32_t table_lookup(struct store *s, const uint8_t *id) {
    uint32_t i = s->index[id_hash(id) & s->h->index_mask];
    while (i != NONE32) {
        entry_t *e = entry_at(s, i);
        if (memcmp(e->id, id, STORE_ID_SIZE) == 0) return i;
        i = e->hnext;
    }
    return NONE32;
}

void table_index_insert(struct store *s, uint32_t i) {
    entry_t *e = entry_at(s, i);
    uint32_t *bucket = &s->index[id_hash(e->id) & s->h->index_mask];
    e->hnext = *bucket;
    *bucket = i;
}

void table_index_remove(struct store *s, uint32_t i) {
    entry_t *e = entry_at(s, i);
    uint32_t *link = &s->index[id_hash(e->id) & s->h->index_mask];
    while (*link != NONE32) {
        if (*link == i) {
            *link = e->hnext;
            e->hnext = NONE32;
            return;
        }
        link = &entry_at(s, *link)->hnext;
    }
}

uint32_t table_entry_alloc(struct store *s) {
    header_t *h = s->h;
    uint32_t i = h->free_entries;
    if (i != NONE32) {
        h->free_entries = entry_at(s, i)->hnext;
    } else if (h->entry_hwm < h->max_entries) {
        i = h->entry_hwm++;
    } else {
        return NONE32;
    }
    entry_t *e = entry_at(s, i);
    e->generation++;
    e->hnext = NONE32;
    return i;
}

static void count_state(struct store *s, const entry_t *e, uint32_t state, int64_t delta) {
    counters_t *c = &s->h->c;
    if (state == ENTRY_CREATED) c->num_created += (uint64_t)delta;
    else if (state == ENTRY_SEALED) c->num_sealed += (uint64_t)delta;
    else if (state == ENTRY_DELETED) c->num_deleted_pinned += (uint64_t)delta;
    else if (state == ENTRY_SPILLED) {
        c->num_spilled += (uint64_t)delta;
        c->bytes_spilled += (uint64_t)delta * (e->data_size + e->metadata_size);
        if (e->flags & ENTRY_FALLBACK) c->num_fallback += (uint64_t)delta;
    }
}

void table_set_state(struct store *s, uint32_t i, uint32_t state) {
    entry_t *e = entry_at(s, i);
    count_state(s, e, e->state, -1);
    __atomic_store_n(&e->state, state, __ATOMIC_RELEASE);
    count_state(s, e, state, +1);
}

/* An entry on a list is on the evictable one if it is evictable, else on
 * the spillable one; both share the entry's links. */
static void lru_ends(struct store *s, const entry_t *e, uint32_t **head, uint32_t **tail,
                     uint64_t **bytes) {
    header_t *h = s->h;
    if (e->flags & ENTRY_EVICTABLE) {
        *head = &h->lru_head, *tail = &h->lru_tail, *bytes = &h->c.bytes_evictable;
    } else {
        *head = &h->spill_head, *tail = &h->spill_tail, *bytes = &h->c.bytes_spillable;
    }
}

void table_lru_push(struct store *s, uint32_t i) {
    entry_t *e = entry_at(s, i);
    uint32_t *head, *tail;
    uint64_t *bytes;
    lru_ends(s, e, &head, &tail, &bytes);
    if (e->location != STORE_NO_LOCATION && !(e->flags & ENTRY_EVICTABLE)) {
        /* A restored object (its bytes are on disk too) is a cache entry:
         * the first to go, since letting it go costs no write. Tick 0 keeps
         * the order when recovery sorts the list by tick. */
        e->lru_tick = 0;
        e->lru_prev = NONE32;
        e->lru_next = *head;
        if (*head != NONE32) entry_at(s, *head)->lru_prev = i;
        else *tail = i;
        *head = i;
    } else {
        e->lru_tick = ++s->h->lru_clock;
        e->lru_next = NONE32;
        e->lru_prev = *tail;
        if (*tail != NONE32) entry_at(s, *tail)->lru_next = i;
        else *head = i;
        *tail = i;
    }
    e->flags |= ENTRY_IN_LRU;
    *bytes += e->block_size;
}

void table_lru_remove(struct store *s, uint32_t i) {
    entry_t *e = entry_at(s, i);
    if (!(e->flags & ENTRY_IN_LRU)) return;
    uint32_t *head, *tail;
    uint64_t *bytes;
    lru_ends(s, e, &head, &tail, &bytes);
    if (e->lru_prev != NONE32) entry_at(s, e->lru_prev)->lru_next = e->lru_next;
    else *head = e->lru_next;
    if (e->lru_next != NONE32) entry_at(s, e->lru_next)->lru_prev = e->lru_prev;
    else *tail = e->lru_prev;
    e->lru_prev = e->lru_next = NONE32;
    e->flags &= (uint16_t)~ENTRY_IN_LRU;
    *bytes -= e->block_size;
}

void table_pin(struct store *s, uint32_t i, int slot) {
    entry_t *e = entry_at(s, i);
    if (pin_test(e, slot)) return;
    pin_set(e, slot);
    CRASH_POINT(STORE_CRASH_PIN_MID_UPDATE);
    if (e->npins++ == 0) {
        s->h->c.bytes_pinned += e->block_size;
        table_lru_remove(s, i);
    }
}

void table_unpin(struct store *s, uint32_t i, int slot) {
    entry_t *e = entry_at(s, i);
    if (!pin_test(e, slot)) return;
    pin_clear(e, slot);
    if (--e->npins > 0) return;
    s->h->c.bytes_pinned -= e->block_size;
    if (e->state == ENTRY_DELETED) table_free_object(s, i);
    else if (e->state == ENTRY_SEALED) table_lru_push(s, i);
}

void table_free_object(struct store *s, uint32_t i) {
    header_t *h = s->h;
    entry_t *e = entry_at(s, i);
    if (e->state == ENTRY_SPILLED) { /* no block, no pins, not on a list */
        table_index_remove(s, i);
        table_set_state(s, i, ENTRY_FREE);
        e->flags = 0;
        e->hnext = h->free_entries;
        h->free_entries = i;
        return;
    }
    if (e->state == ENTRY_CREATED || e->state == ENTRY_SEALED) table_index_remove(s, i);
    table_lru_remove(s, i);
    if (e->npins) {
        h->c.bytes_pinned -= e->block_size;
        e->npins = 0;
    }
    memset(e->pins, 0, sizeof e->pins);
    table_set_state(s, i, ENTRY_FREE);
    CRASH_POINT(STORE_CRASH_FREE_AFTER_STATE);
    arena_free(s, e->block);
    h->c.bytes_in_use -= e->block_size;
    e->flags = 0;
    e->hnext = h->free_entries;
    h->free_entries = i;
}
