/*
 * layout.h - the segment's on-memory layout and the process-local handle.
 * Internal to csrc/; the public API is store.h.
 *
 * Segment (offsets in bytes from the mapping's base):
 *
 *   0              header_t (lock, allocator bins, LRU ends, statistics, futex words)
 *   slots_offset   slot_t[STORE_MAX_CLIENTS]   one per attached process
 *   entries_offset entry_t[max_entries]        the object table: the source of truth
 *   index_offset   uint32_t[nbuckets]          hash buckets -> chains through entry.hnext
 *   data_offset    data area (page aligned):   | block_t | payload ... | block_t | ...
 *
 * Everything but the futex words is read and written under header.lock.
 * Derived state (index, entry free list, bins, LRU, statistics, npins) can
 * be rebuilt from the entries alone; see recover.c.
 */
#ifndef SHOAL_LAYOUT_H
#define SHOAL_LAYOUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "store.h"

#define SEG_MAGIC 0x31544c414f4853ULL /* "SHOALT1" */
#define SEG_VERSION 2u

#define NONE32 UINT32_MAX
#define MAX_OBJECTS_LIMIT (1u << 28) /* entries per segment; keeps the index sizing loop finite */
#define NONE64 UINT64_MAX

#define NBINS 256                     /* allocator size classes */
#define NWAIT 64                      /* futex buckets for waiting on one ID */
#define WAIT_ANY NWAIT                /* slot.waits index for store_wait_seal_after */
#define WAIT_SPILLER (NWAIT + 1)      /* ... for store_spill_wait (the spiller sleeping) */
#define WAIT_ROOM (NWAIT + 2)         /* ... for store_wait_space (creators waiting for room) */
#define NWAITWORDS (NWAIT + 3)
#define BLOCK_HEADER 64u              /* block_t, padded to the alignment */
#define MIN_BLOCK (2u * BLOCK_HEADER) /* header + smallest payload */
#define PIN_WORDS (STORE_MAX_CLIENTS / 64)

/* Entry states. FREE must be 0 so a zeroed table is all free. SPILLED: a
 * sealed object whose bytes live outside the segment, at `location` (a
 * number only the runtime interprets); it has no block and no pins. */
enum { ENTRY_FREE = 0, ENTRY_CREATED = 1, ENTRY_SEALED = 2, ENTRY_DELETED = 3, ENTRY_SPILLED = 4 };

/* Entry flags. The high byte is the creator's tag (STORE_TAG), opaque here. */
#define ENTRY_EVICTABLE 0x1u
#define ENTRY_IN_LRU 0x2u   /* on the evictable list or, if not evictable, the spillable one */
#define ENTRY_FALLBACK 0x4u /* SPILLED from birth: created outside the segment */
#define ENTRY_TAG_SHIFT 8

typedef struct {
    uint8_t id[STORE_ID_SIZE];
    uint32_t state;      /* ENTRY_*; written last on create, first on free */
    uint32_t generation; /* bumped each time the entry is reused */
    uint32_t hnext;      /* next entry in the hash chain, or in the free list */
    uint32_t lru_prev, lru_next;
    uint32_t npins;      /* = popcount(pins), kept for speed */
    uint16_t creator;    /* client slot that created the object */
    uint16_t flags;      /* ENTRY_EVICTABLE | ENTRY_IN_LRU */
    uint64_t data_size, metadata_size;
    uint64_t block;      /* offset of the block header in the data area */
    uint64_t block_size; /* whole block, header included */
    uint64_t lru_tick;   /* when it was last unpinned (orders the LRU on rebuild) */
    uint64_t pins[PIN_WORDS]; /* bit k: client slot k pins the object */
    uint64_t location;        /* SPILLED: where the bytes are (the runtime's number) */
} entry_t;

typedef struct {
    uint32_t used;
    int32_t pid;
    uint64_t start_time;          /* /proc/<pid>/stat field 22: tells a reused pid apart */
    uint16_t waits[NWAITWORDS];   /* how many of its threads wait on each futex word */
    uint8_t pad[2];
} slot_t;

/* Header of every block in the data area. */
typedef struct {
    uint64_t size;      /* whole block, multiple of STORE_ALIGNMENT */
    uint64_t prev_size; /* size of the block just before (0 for the first) */
    uint64_t is_free;
    uint64_t next_free, prev_free; /* bin links (offsets) while free */
    uint64_t entry;                /* owning entry while allocated (diagnostics) */
    uint64_t pad[2];
} block_t;

typedef struct {
    uint64_t bytes_in_use, bytes_pinned, bytes_evictable, bytes_spillable;
    uint64_t num_created, num_sealed, num_deleted_pinned;
    uint64_t num_spilled, bytes_spilled, num_fallback; /* SPILLED entries (fallback ones too) */
    uint64_t num_evictions, num_recoveries;            /* (not derivable: kept by recovery) */
} counters_t;

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t max_entries;
    uint64_t segment_size;
    uint64_t slots_offset, entries_offset, index_offset, data_offset;
    uint64_t data_size;
    uint32_t index_mask; /* nbuckets - 1 */
    uint32_t pad0;

    pthread_mutex_t lock; /* process-shared, robust */

    /* Guarded by lock. */
    uint32_t holder_slot; /* diagnostics only: who took the lock last */
    uint32_t entry_hwm;   /* entries [0, hwm) have been used at least once */
    uint32_t free_entries;
    uint32_t lru_head, lru_tail;     /* evictable objects; head = least recently used */
    uint32_t spill_head, spill_tail; /* sealed, unpinned, not evictable: spilling candidates */
    uint32_t waiters[NWAITWORDS];    /* threads in futex waits, per word */
    uint64_t lru_clock;
    uint64_t bin_map[NBINS / 64];
    uint64_t bins[NBINS]; /* head block offset of each size class */
    counters_t c;
    uint64_t spill_watermark; /* a create that leaves more in use wakes the spiller (0: off) */
    uint64_t spill_wanted;    /* bytes creators asked room for since the spiller last looked */
    uint32_t spill_exhausted; /* value of spill_done after the last round that ran dry */
    uint32_t pad1;
    uint64_t next_number;     /* store_unique_number */

    /* Futex words: changed under the lock, waited on without it. */
    _Atomic uint32_t seal_any;
    _Atomic uint32_t seal_bucket[NWAIT];
    _Atomic uint32_t spill_call; /* bumped to wake the spiller */
    _Atomic uint32_t spill_done; /* bumped at the end of each spill round */
} header_t;

struct store {
    uint8_t *base;
    uint64_t length;
    header_t *h;
    slot_t *slots;
    entry_t *entries;
    uint32_t *index;
    uint8_t *data;
    uint32_t *local_pins; /* process-private pin count per entry */
    uint64_t local_pins_bytes;
    int slot;
    int closed;
    uint64_t fork_epoch; /* g_fork_epoch at attach: detects use after fork */
    int64_t wait_spin_ns; /* store_get spins this long before sleeping (0: never) */
};

static inline block_t *block_at(const struct store *s, uint64_t off) {
    return (block_t *)(s->data + off);
}

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Block size for a payload of n bytes. */
static inline uint64_t block_size_for(uint64_t n) {
    if (n == 0) n = 1;
    return BLOCK_HEADER + round_up(n, STORE_ALIGNMENT);
}

/* Hash of an ID: IDs are usually random, but mix every byte so that
 * user-chosen IDs (b"a" * 20, counters) spread too. */
static inline uint64_t id_hash(const uint8_t *id) {
    uint64_t a, b;
    uint32_t c;
    __builtin_memcpy(&a, id, 8);
    __builtin_memcpy(&b, id + 8, 8);
    __builtin_memcpy(&c, id + 16, 4);
    uint64_t x = a ^ (b * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)c << 29);
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ULL;
    x ^= x >> 32;
    return x;
}

static inline int pin_test(const entry_t *e, int slot) {
    return (int)((e->pins[slot >> 6] >> (slot & 63)) & 1u);
}
static inline void pin_set(entry_t *e, int slot) { e->pins[slot >> 6] |= 1ULL << (slot & 63); }
static inline void pin_clear(entry_t *e, int slot) { e->pins[slot >> 6] &= ~(1ULL << (slot & 63)); }
static inline uint32_t pin_count(const entry_t *e) {
    uint32_t n = 0;
    for (int i = 0; i < PIN_WORDS; i++) n += (uint32_t)__builtin_popcountll(e->pins[i]);
    return n;
}

#endif /* SHOAL_LAYOUT_H */
