/* arena.c - see arena.h. */
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "internal.h"

/* Size classes: exact classes of 64 bytes up to 4 KiB, then four classes per
 * power of two. Every block of a higher class is bigger than any of a lower
 * one, so a search may take the head of the next non-empty class. */
static inline int bin_of(uint64_t size) {
    uint64_t units = size / STORE_ALIGNMENT;
    if (units <= 64) return (int)units;
    int b = 63 - __builtin_clzll(size); /* >= 12 */
    int k = 65 + (b - 12) * 4 + (int)((size >> (b - 2)) & 3);
    return k < NBINS ? k : NBINS - 1;
}

static void bin_insert(struct store *s, uint64_t off) {
    header_t *h = s->h;
    block_t *b = block_at(s, off);
    int k = bin_of(b->size);
    b->is_free = 1;
    b->entry = NONE64;
    b->prev_free = NONE64;
    b->next_free = h->bins[k];
    if (h->bins[k] != NONE64) block_at(s, h->bins[k])->prev_free = off;
    h->bins[k] = off;
    h->bin_map[k >> 6] |= 1ULL << (k & 63);
}

static void bin_remove(struct store *s, uint64_t off) {
    header_t *h = s->h;
    block_t *b = block_at(s, off);
    int k = bin_of(b->size);
    if (b->prev_free != NONE64)
        block_at(s, b->prev_free)->next_free = b->next_free;
    else
        h->bins[k] = b->next_free;
    if (b->next_free != NONE64) block_at(s, b->next_free)->prev_free = b->prev_free;
    if (h->bins[k] == NONE64) h->bin_map[k >> 6] &= ~(1ULL << (k & 63));
    b->is_free = 0;
}

/* First non-empty class >= k, or -1. */
static int next_bin(const header_t *h, int k) {
    for (int w = k >> 6; w < NBINS / 64; w++) {
        uint64_t bits = h->bin_map[w];
        if (w == k >> 6) bits &= ~0ULL << (k & 63);
        if (bits) return w * 64 + __builtin_ctzll(bits);
    }
    return -1;
}

static void set_prev_size_after(struct store *s, uint64_t off, uint64_t size) {
    uint64_t after = off + size;
    if (after < s->h->data_size) block_at(s, after)->prev_size = size;
}

void arena_init(struct store *s) {
    header_t *h = s->h;
    for (int k = 0; k < NBINS; k++) h->bins[k] = NONE64;
    memset(h->bin_map, 0, sizeof h->bin_map);
    block_t *b = block_at(s, 0);
    b->size = h->data_size;
    b->prev_size = 0;
    bin_insert(s, 0);
}

#define SAME_CLASS_SCAN 32 /* blocks tried in the request's own class */

uint64_t arena_alloc(struct store *s, uint64_t size, uint32_t entry) {
    header_t *h = s->h;
    int k = bin_of(size);
    uint64_t off = h->bins[k];
    for (int n = 0; off != NONE64 && n < SAME_CLASS_SCAN; n++) {
        if (block_at(s, off)->size >= size) goto found;
        off = block_at(s, off)->next_free;
    }
    int larger = next_bin(h, k + 1);
    if (larger >= 0) {
        off = h->bins[larger];
        goto found;
    }
    /* No larger class: a fitting block may still sit deeper in this one.
     * Rare (the store is nearly full), so the full walk is affordable. */
    for (; off != NONE64; off = block_at(s, off)->next_free)
        if (block_at(s, off)->size >= size) goto found;
    return NONE64;
found:
    bin_remove(s, off);
    block_t *b = block_at(s, off);
    uint64_t rest = b->size - size;
    if (rest >= MIN_BLOCK) { /* split: the tail goes back to the free lists */
        b->size = size;
        block_t *t = block_at(s, off + size);
        t->size = rest;
        t->prev_size = size;
        set_prev_size_after(s, off + size, rest);
        bin_insert(s, off + size);
    }
    b->entry = entry;
    return off;
}

void arena_free(struct store *s, uint64_t off) {
    block_t *b = block_at(s, off);
    uint64_t size = b->size;
    uint64_t next = off + size;
    if (next < s->h->data_size && block_at(s, next)->is_free) {
        size += block_at(s, next)->size;
        bin_remove(s, next);
        CRASH_POINT(STORE_CRASH_FREE_MID_COALESCE);
    }
    if (b->prev_size != 0) {
        uint64_t prev = off - b->prev_size;
        if (block_at(s, prev)->is_free) {
            bin_remove(s, prev);
            size += block_at(s, prev)->size;
            off = prev;
            b = block_at(s, prev);
        }
    }
    b->size = size;
    set_prev_size_after(s, off, size);
    bin_insert(s, off);
}

uint64_t arena_largest_free(struct store *s) {
    header_t *h = s->h;
    for (int w = NBINS / 64 - 1; w >= 0; w--) {
        if (!h->bin_map[w]) continue;
        int k = w * 64 + 63 - __builtin_clzll(h->bin_map[w]);
        uint64_t best = 0;
        for (uint64_t off = h->bins[k]; off != NONE64; off = block_at(s, off)->next_free)
            if (block_at(s, off)->size > best) best = block_at(s, off)->size;
        return best;
    }
    return 0;
}

static void put_free_block(struct store *s, uint64_t off, uint64_t size, uint64_t prev_size) {
    block_t *b = block_at(s, off);
    b->size = size;
    b->prev_size = prev_size;
    bin_insert(s, off);
}

void arena_rebuild(struct store *s, const uint32_t *live, uint32_t n) {
    header_t *h = s->h;
    for (int k = 0; k < NBINS; k++) h->bins[k] = NONE64;
    memset(h->bin_map, 0, sizeof h->bin_map);
    uint64_t cur = 0, prev_size = 0;
    for (uint32_t i = 0; i < n; i++) {
        entry_t *e = &s->entries[live[i]];
        if (e->block > cur) {
            put_free_block(s, cur, e->block - cur, prev_size);
            prev_size = e->block - cur;
            cur = e->block;
        }
        block_t *b = block_at(s, e->block);
        b->size = e->block_size;
        b->prev_size = prev_size;
        b->is_free = 0;
        b->entry = live[i];
        prev_size = e->block_size;
        cur += e->block_size;
    }
    if (cur < h->data_size) put_free_block(s, cur, h->data_size - cur, prev_size);
}

int arena_validate(struct store *s, uint64_t *allocated_blocks, char *msg, size_t len) {
    header_t *h = s->h;
    uint64_t off = 0, prev_size = 0, nfree = 0, nalloc = 0;
    int prev_free = 0;
    while (off < h->data_size) {
        block_t *b = block_at(s, off);
        if (b->size < STORE_ALIGNMENT || b->size % STORE_ALIGNMENT || off + b->size > h->data_size) {
            snprintf(msg, len, "block at %llu has bad size %llu", (unsigned long long)off,
                     (unsigned long long)b->size);
            return -1;
        }
        if (b->prev_size != prev_size) {
            snprintf(msg, len, "block at %llu: prev_size %llu, expected %llu", (unsigned long long)off,
                     (unsigned long long)b->prev_size, (unsigned long long)prev_size);
            return -1;
        }
        if (b->is_free) {
            if (prev_free) {
                snprintf(msg, len, "free blocks not coalesced at %llu", (unsigned long long)off);
                return -1;
            }
            nfree++;
        } else {
            uint64_t ei = b->entry;
            if (ei >= h->entry_hwm || s->entries[ei].block != off ||
                s->entries[ei].block_size != b->size || s->entries[ei].state == ENTRY_FREE) {
                snprintf(msg, len, "allocated block at %llu has no matching entry",
                         (unsigned long long)off);
                return -1;
            }
            nalloc++;
        }
        prev_free = (int)b->is_free;
        prev_size = b->size;
        off += b->size;
    }
    uint64_t listed = 0;
    for (int k = 0; k < NBINS; k++) {
        int bit = (int)((h->bin_map[k >> 6] >> (k & 63)) & 1);
        if (bit != (h->bins[k] != NONE64)) {
            snprintf(msg, len, "class %d: bitmap disagrees with list", k);
            return -1;
        }
        uint64_t prev = NONE64;
        for (uint64_t o = h->bins[k]; o != NONE64; o = block_at(s, o)->next_free) {
            block_t *b = block_at(s, o);
            if (!b->is_free || bin_of(b->size) != k || b->prev_free != prev) {
                snprintf(msg, len, "class %d: bad free block at %llu", k, (unsigned long long)o);
                return -1;
            }
            prev = o;
            if (++listed > nfree) {
                snprintf(msg, len, "free lists hold more blocks than the area");
                return -1;
            }
        }
    }
    if (listed != nfree) {
        snprintf(msg, len, "%llu free blocks, %llu listed", (unsigned long long)nfree,
                 (unsigned long long)listed);
        return -1;
    }
    *allocated_blocks = nalloc;
    return 0;
}
