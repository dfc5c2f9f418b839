/*
 * recover.c - surviving processes that die at any instruction.
 *
 * Two cases:
 *  - A process dies while holding the segment lock. The robust mutex hands
 *    the next locker EOWNERDEAD; it rebuilds the index, the entry free list,
 *    the allocator, the LRU list, pin counts and statistics from the entries
 *    (the only state every mutation keeps consistent at each instruction),
 *    then reaps dead clients and wakes every waiter.
 *  - A process dies outside the lock, holding pins or unsealed objects. Its
 *    slot still names it; reap_dead_locked finds slots whose process is gone
 *    (or is a zombie, or is another process with a reused pid) and releases
 *    what they held. It runs when the store is full, when slots run out,
 *    after a recovery, and when the runtime asks (it sees its workers die).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "internal.h"
#include "table.h"

/* Lock with a bounded sleep, retried: when a lock holder dies the kernel
 * wakes one waiter to take over; if that waiter is being killed too, the
 * wake-up is lost and the others would sleep forever. A retry sees the
 * owner-died mark and recovers. */
#define LOCK_RETRY_NS 50000000L

store_status_t seg_lock(struct store *s) {
    int rc;
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += LOCK_RETRY_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000L;
        }
        rc = pthread_mutex_clocklock(&s->h->lock, CLOCK_MONOTONIC, &until);
        if (rc != ETIMEDOUT) break;
    }
    if (rc == EOWNERDEAD) {
        recover_locked(s);
        pthread_mutex_consistent(&s->h->lock);
    } else if (rc != 0) {
        errno = rc;
        return STORE_E_SYS;
    }
    s->h->holder_slot = (uint32_t)s->slot;
    return STORE_OK;
}

void seg_unlock(struct store *s) { pthread_mutex_unlock(&s->h->lock); }

void release_client_locked(struct store *s, int slot) {
    header_t *h = s->h;
    for (uint32_t i = 0; i < h->entry_hwm; i++) {
        entry_t *e = entry_at(s, i);
        if (e->state == ENTRY_FREE) continue;
        if (e->state == ENTRY_CREATED && e->creator == slot) table_free_object(s, i);
        else if (pin_test(e, slot)) table_unpin(s, i, slot);
    }
}

uint32_t reap_dead_locked(struct store *s) {
    header_t *h = s->h;
    uint32_t n = 0;
    for (int k = 0; k < STORE_MAX_CLIENTS; k++) {
        slot_t *sl = &s->slots[k];
        if (!sl->used || k == s->slot || client_alive(sl)) continue;
        release_client_locked(s, k);
        for (int w = 0; w < NWAITWORDS; w++) h->waiters[w] -= sl->waits[w];
        memset(sl, 0, sizeof *sl);
        n++;
    }
    return n;
}

static int by_block(const void *a, const void *b, void *arg) {
    const entry_t *entries = arg;
    uint64_t x = entries[*(const uint32_t *)a].block, y = entries[*(const uint32_t *)b].block;
    return x < y ? -1 : x > y;
}

static int by_tick(const void *a, const void *b, void *arg) {
    const entry_t *entries = arg;
    uint64_t x = entries[*(const uint32_t *)a].lru_tick, y = entries[*(const uint32_t *)b].lru_tick;
    return x < y ? -1 : x > y;
}

static int entry_sane(struct store *s, const entry_t *e) {
    if (e->state == ENTRY_SPILLED) /* no block: only its sizes and location matter */
        return e->data_size <= (1ULL << 46) && e->metadata_size <= (1ULL << 46) &&
               e->location != STORE_NO_LOCATION;
    uint64_t need = block_size_for(e->data_size + e->metadata_size);
    return e->block % STORE_ALIGNMENT == 0 && e->block_size % STORE_ALIGNMENT == 0 &&
           e->block_size >= need && e->block <= s->h->data_size &&
           e->block_size <= s->h->data_size - e->block;
}

void recover_locked(struct store *s) {
    header_t *h = s->h;
    uint32_t hwm = h->entry_hwm;
    if (hwm > h->max_entries) hwm = h->entry_hwm = h->max_entries;
    uint32_t *live = malloc(sizeof(uint32_t) * (hwm + 1u));
    memset(&h->c, 0, offsetof(counters_t, num_evictions));
    memset(s->index, 0xff, sizeof(uint32_t) * ((uint64_t)h->index_mask + 1));
    h->free_entries = NONE32;
    h->lru_head = h->lru_tail = NONE32;
    h->spill_head = h->spill_tail = NONE32;

    /* 1. Entries: keep the sane ones, recount pins, index the visible ones. */
    uint32_t n = 0;
    for (uint32_t i = hwm; i-- > 0;) {
        entry_t *e = entry_at(s, i);
        uint32_t st = e->state;
        int keep = (st == ENTRY_CREATED || st == ENTRY_SEALED || st == ENTRY_DELETED || st == ENTRY_SPILLED) &&
                   entry_sane(s, e);
        if (keep && st == ENTRY_SPILLED) { /* a spill may have died half way: pins are gone */
            memset(e->pins, 0, sizeof e->pins);
            e->block_size = 0;
        }
        e->npins = keep ? pin_count(e) : 0;
        if (keep && st == ENTRY_DELETED && e->npins == 0) keep = 0;
        if (keep && st != ENTRY_DELETED) {
            uint32_t dup = table_lookup(s, e->id);
            if (dup != NONE32) { /* cannot happen; keep the sealed one */
                if (st == ENTRY_SEALED && entry_at(s, dup)->state == ENTRY_CREATED) {
                    table_index_remove(s, dup);
                    entry_at(s, dup)->state = ENTRY_FREE;
                } else {
                    keep = 0;
                }
            }
        }
        if (!keep) {
            e->state = ENTRY_FREE;
            e->flags = 0;
            memset(e->pins, 0, sizeof e->pins);
            continue;
        }
        e->flags &= (uint16_t)~ENTRY_IN_LRU;
        e->lru_prev = e->lru_next = NONE32;
        if (st != ENTRY_DELETED) table_index_insert(s, i);
    }
    /* 2. Free entries (lowest first) and the list of live ones. */
    for (uint32_t i = hwm; i-- > 0;) {
        entry_t *e = entry_at(s, i);
        if (e->state == ENTRY_FREE) {
            e->hnext = h->free_entries;
            h->free_entries = i;
        } else if (e->state == ENTRY_SPILLED) {
            h->c.num_spilled++;
            h->c.bytes_spilled += e->data_size + e->metadata_size;
            if (e->flags & ENTRY_FALLBACK) h->c.num_fallback++;
        } else if (live) {
            live[n++] = i;
        }
    }
    if (!live) { /* out of memory: degrade to an empty store rather than corrupt it */
        for (uint32_t i = 0; i < hwm; i++) entry_at(s, i)->state = ENTRY_FREE;
        memset(&h->c, 0, offsetof(counters_t, num_evictions));
        memset(s->index, 0xff, sizeof(uint32_t) * ((uint64_t)h->index_mask + 1));
        h->entry_hwm = 0;
        h->free_entries = NONE32;
        arena_init(s);
        goto wake;
    }
    /* 3. Allocator: sort by offset, drop overlaps, rebuild headers and lists. */
    qsort_r(live, n, sizeof *live, by_block, s->entries);
    uint32_t m = 0;
    uint64_t end = 0;
    for (uint32_t k = 0; k < n; k++) {
        entry_t *e = entry_at(s, live[k]);
        if (e->block < end) { /* overlapping: cannot happen; drop it */
            if (e->state != ENTRY_DELETED) table_index_remove(s, live[k]);
            e->state = ENTRY_FREE;
            e->hnext = h->free_entries;
            h->free_entries = live[k];
            continue;
        }
        end = e->block + e->block_size;
        live[m++] = live[k];
    }
    arena_rebuild(s, live, m);
    /* 4. Statistics and the LRU order. */
    uint32_t nlru = 0;
    for (uint32_t k = 0; k < m; k++) {
        entry_t *e = entry_at(s, live[k]);
        h->c.bytes_in_use += e->block_size;
        if (e->npins) h->c.bytes_pinned += e->block_size;
        if (e->state == ENTRY_CREATED) h->c.num_created++;
        else if (e->state == ENTRY_SEALED) h->c.num_sealed++;
        else h->c.num_deleted_pinned++;
        if (e->state == ENTRY_SEALED && e->npins == 0) live[nlru++] = live[k];
    }
    qsort_r(live, nlru, sizeof *live, by_tick, s->entries);
    for (uint32_t k = 0; k < nlru; k++) table_lru_push(s, live[k]);
    free(live);
wake:
    /* 5. Waiter counts from the slots, then wake everyone to look again. */
    for (int w = 0; w < NWAITWORDS; w++) h->waiters[w] = 0;
    for (int k = 0; k < STORE_MAX_CLIENTS; k++)
        if (s->slots[k].used)
            for (int w = 0; w < NWAITWORDS; w++) h->waiters[w] += s->slots[k].waits[w];
    h->c.num_recoveries++;
    reap_dead_locked(s);
    for (int b = 0; b < NWAIT; b++) {
        atomic_fetch_add(&h->seal_bucket[b], 1);
        futex_wake_all(&h->seal_bucket[b]);
    }
    atomic_fetch_add(&h->seal_any, 1);
    futex_wake_all(&h->seal_any);
    atomic_fetch_add(&h->spill_call, 1);
    futex_wake_all(&h->spill_call);
    atomic_fetch_add(&h->spill_done, 1);
    futex_wake_all(&h->spill_done);
}

/* Walk an LRU list (the evictable one, or the spillable one): its links,
 * its order by tick, what it holds and how many; 0 if sound, else writes buf. */
static int check_list(struct store *s, uint32_t head, uint64_t expected, int evictable, char *buf,
                      size_t len) {
    const char *name = evictable ? "evictable" : "spillable";
    uint64_t n = 0, prev_tick = 0;
    for (uint32_t i = head, prev = NONE32; i != NONE32; prev = i, i = entry_at(s, i)->lru_next) {
        entry_t *e = entry_at(s, i);
        if (++n > expected || e->lru_prev != prev || e->lru_tick < prev_tick ||
            !!(e->flags & ENTRY_EVICTABLE) != evictable) {
            snprintf(buf, len, "the %s list is broken at entry %u", name, i);
            return 1;
        }
        prev_tick = e->lru_tick;
    }
    if (n != expected) {
        snprintf(buf, len, "the %s list holds %llu of %llu %s objects", name, (unsigned long long)n,
                 (unsigned long long)expected, name);
        return 1;
    }
    return 0;
}

store_status_t store_validate(store_t *s, char *msg, size_t len) {
    store_status_t rc = handle_check(s);
    if (rc != STORE_OK) return rc;
    if ((rc = seg_lock(s)) != STORE_OK) return rc;
    header_t *h = s->h;
    counters_t c = {0};
    uint64_t live = 0, evictable = 0, spillable = 0, nspill = 0;
    char buf[200] = "";
    rc = STORE_E_INTERNAL;
    for (uint32_t i = 0; i < h->entry_hwm; i++) {
        entry_t *e = entry_at(s, i);
        if (e->state == ENTRY_FREE) continue;
        if (e->state > ENTRY_SPILLED || !entry_sane(s, e)) {
            snprintf(buf, sizeof buf, "entry %u: bad state or block", i);
            goto out;
        }
        if (e->npins != pin_count(e)) {
            snprintf(buf, sizeof buf, "entry %u: npins %u but %u pin bits", i, e->npins, pin_count(e));
            goto out;
        }
        int indexed = table_lookup(s, e->id) == i;
        if (indexed != (e->state != ENTRY_DELETED)) {
            snprintf(buf, sizeof buf, "entry %u: indexed=%d in state %u", i, indexed, e->state);
            goto out;
        }
        if (e->state == ENTRY_CREATED && !pin_test(e, e->creator)) {
            snprintf(buf, sizeof buf, "entry %u: unsealed but its creator does not pin it", i);
            goto out;
        }
        if (e->state == ENTRY_DELETED && e->npins == 0) {
            snprintf(buf, sizeof buf, "entry %u: deleted and unpinned but not freed", i);
            goto out;
        }
        int want_lru = e->state == ENTRY_SEALED && e->npins == 0;
        if (want_lru != !!(e->flags & ENTRY_IN_LRU)) {
            snprintf(buf, sizeof buf, "entry %u: LRU membership %d, expected %d", i,
                     !!(e->flags & ENTRY_IN_LRU), want_lru);
            goto out;
        }
        if (e->state == ENTRY_SPILLED) {
            if (e->npins) {
                snprintf(buf, sizeof buf, "entry %u: spilled but pinned", i);
                goto out;
            }
            c.num_spilled++;
            c.bytes_spilled += e->data_size + e->metadata_size;
            if (e->flags & ENTRY_FALLBACK) c.num_fallback++;
            nspill++;
            continue;
        }
        live++;
        c.bytes_in_use += e->block_size;
        if (e->npins) c.bytes_pinned += e->block_size;
        if (want_lru && (e->flags & ENTRY_EVICTABLE)) c.bytes_evictable += e->block_size, evictable++;
        else if (want_lru) c.bytes_spillable += e->block_size, spillable++;
        if (e->state == ENTRY_CREATED) c.num_created++;
        else if (e->state == ENTRY_SEALED) c.num_sealed++;
        else c.num_deleted_pinned++;
    }
    if (check_list(s, h->lru_head, evictable, 1, buf, sizeof buf) ||
        check_list(s, h->spill_head, spillable, 0, buf, sizeof buf))
        goto out;
    if (c.bytes_in_use != h->c.bytes_in_use || c.bytes_pinned != h->c.bytes_pinned ||
        c.bytes_evictable != h->c.bytes_evictable || c.num_created != h->c.num_created ||
        c.num_sealed != h->c.num_sealed || c.num_deleted_pinned != h->c.num_deleted_pinned ||
        c.bytes_spillable != h->c.bytes_spillable || c.num_spilled != h->c.num_spilled ||
        c.bytes_spilled != h->c.bytes_spilled || c.num_fallback != h->c.num_fallback) {
        snprintf(buf, sizeof buf, "statistics disagree with the table");
        goto out;
    }
    uint64_t free_listed = 0;
    for (uint32_t i = h->free_entries; i != NONE32; i = entry_at(s, i)->hnext) {
        if (i >= h->entry_hwm || entry_at(s, i)->state != ENTRY_FREE || ++free_listed > h->entry_hwm) {
            snprintf(buf, sizeof buf, "entry free list is broken at %u", i);
            goto out;
        }
    }
    if (free_listed + live + nspill != h->entry_hwm) {
        snprintf(buf, sizeof buf, "%llu free + %llu live + %llu spilled entries != %u used",
                 (unsigned long long)free_listed, (unsigned long long)(live), (unsigned long long)nspill,
                 h->entry_hwm);
        goto out;
    }
    uint64_t blocks = 0;
    if (arena_validate(s, &blocks, buf, sizeof buf) != 0) goto out;
    if (blocks != live) {
        snprintf(buf, sizeof buf, "%llu allocated blocks for %llu live entries",
                 (unsigned long long)blocks, (unsigned long long)live);
        goto out;
    }
    rc = STORE_OK;
out:
    seg_unlock(s);
    if (len) snprintf(msg, len, "%s", buf);
    return rc;
}
