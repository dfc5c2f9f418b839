/*
 * store.h - the whole public C API of shoal's shared-memory object store.
 *
 * One segment (a memfd, so no name ever exists in /dev/shm) holds everything:
 *
 *   | header | client slots | object entries | hash index | data area ........ |
 *
 * Every process of a runtime maps the segment once and works on it directly:
 * create, seal, get and release are function calls plus a short critical
 * section under a process-shared robust mutex, never a message to another
 * process. The object entries are the single source of truth; the hash
 * index, the allocator's free lists, the LRU list and the statistics are
 * derived from them and rebuilt if a process dies while holding the lock.
 *
 * Conventions: every function returns a store_status_t and writes results
 * through out-parameters. Nothing here allocates Python objects, prints,
 * logs or aborts on bad input. Times are in milliseconds (C only); sizes are
 * bytes. Functions are thread-safe unless noted.
 */
#ifndef SHOAL_STORE_H
#define SHOAL_STORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STORE_ID_SIZE 20      /* bytes in an object ID */
#define STORE_ALIGNMENT 64    /* every payload starts on this boundary */
/* Processes attached at once: a build setting (SHOAL_MAX_CLIENTS=1024 pip
 * install ...), a multiple of 64. Each object's entry holds a bit per slot:
 * 1024 slots make an entry 96 bytes larger (docs/cluster.md has the cost). */
#ifndef STORE_MAX_CLIENTS
#define STORE_MAX_CLIENTS 256
#endif
#if STORE_MAX_CLIENTS % 64 != 0 || STORE_MAX_CLIENTS < 64 || STORE_MAX_CLIENTS > 65536
#error "STORE_MAX_CLIENTS must be a multiple of 64 between 64 and 65536"
#endif

typedef enum {
    STORE_OK = 0,
    STORE_E_EXISTS,        /* create: an object with this ID exists */
    STORE_E_NOT_FOUND,     /* no such object (or it was aborted/deleted) */
    STORE_E_STATE,         /* wrong state: seal twice, delete unsealed, ... */
    STORE_E_NOT_OWNER,     /* seal/abort of an object another process creates */
    STORE_E_FULL,          /* no room, even after eviction */
    STORE_E_TOO_LARGE,     /* request larger than the whole data area */
    STORE_E_TABLE_FULL,    /* every object entry is in use */
    STORE_E_CLIENTS_FULL,  /* every client slot is in use */
    STORE_E_TIMEOUT,       /* get: not sealed before the deadline */
    STORE_E_INTERRUPTED,   /* get: a signal arrived; retry after handling it */
    STORE_E_INVALID,       /* bad argument (size, timeout, handle) */
    STORE_E_FORKED,        /* handle used in a forked child: attach again */
    STORE_E_CLOSED,        /* handle already detached */
    STORE_E_BAD_SEGMENT,   /* attach: not a store segment, or wrong version */
    STORE_E_SYS,           /* an OS call failed; errno holds the reason */
    STORE_E_INTERNAL,      /* an invariant is broken: a bug */
    STORE_SPILLED,         /* get: sealed, but its bytes are outside the segment (not an error) */
    STORE_E_BUSY,          /* store_mark_spilled: another reader pins the object */
    STORE_STATUS_COUNT
} store_status_t;

/* Flags for store_create. */
#define STORE_EVICTABLE 0x1u /* may be evicted (LRU) once sealed and unpinned */
/* A tag of the creator's choosing (0-255), kept with the object and listed
 * by store_list_objects; the store never reads it. */
#define STORE_TAG(t) (((uint32_t)(t) & 0xffu) << 8)

#define STORE_NO_LOCATION UINT64_MAX

typedef struct store store_t; /* a process's attachment; opaque */

/* A pinned object, as handed out by store_create and store_get. The
 * (index, generation) pair identifies this incarnation of the object even
 * after its ID is deleted or reused; pass the whole struct to store_release. */
typedef struct {
    uint32_t index;
    uint32_t generation;
    uint8_t *data;
    uint64_t data_size;
    uint8_t *metadata;
    uint64_t metadata_size;
    uint64_t location; /* where its bytes are on disk (spilled or restored), else STORE_NO_LOCATION */
} store_object_t;

typedef struct {
    uint64_t capacity_bytes;      /* size of the data area */
    uint64_t bytes_in_use;        /* allocated blocks, headers included */
    uint64_t bytes_pinned;        /* blocks of objects some process pins */
    uint64_t bytes_evictable;     /* blocks of sealed, unpinned, evictable objects */
    uint64_t num_created;         /* objects being written (not sealed yet) */
    uint64_t num_sealed;          /* sealed objects visible by ID */
    uint64_t num_deleted_pinned;  /* deleted objects kept alive by pins */
    uint64_t num_evictions;       /* objects evicted since the segment was made */
    uint64_t num_recoveries;      /* lock-owner deaths recovered from */
    uint64_t num_clients;         /* processes attached */
    uint64_t max_objects;         /* size of the object table */
    uint64_t largest_free_block;  /* biggest object that fits without eviction */
    uint64_t bytes_spillable;     /* blocks of sealed, unpinned objects that are not evictable */
    uint64_t num_spilled;         /* objects whose bytes are outside the segment */
    uint64_t bytes_spilled;       /* their data + metadata */
    uint64_t num_fallback;        /* of those, created outside (store_create_spilled) */
    uint64_t spill_watermark;     /* see store_set_spill_watermark */
} store_stats_t;

/* One object, as store_list_objects describes it. */
typedef struct {
    uint8_t id[STORE_ID_SIZE];
    uint32_t state;          /* 1 created, 2 sealed, 3 deleted (still pinned), 4 spilled */
    uint32_t flags;          /* STORE_EVICTABLE | STORE_TAG(t) | 0x4 (fallback) */
    uint32_t npins;          /* processes pinning it */
    uint64_t data_size, metadata_size;
    uint64_t block_size;     /* bytes of the segment it takes (0 when spilled) */
    uint64_t location;       /* spilled: where its bytes are */
    uint64_t pins[STORE_MAX_CLIENTS / 64]; /* bit k: client slot k pins it */
} store_object_info_t;

/* Human-readable name of a status ("object not found", ...). Never NULL. */
const char *store_strerror(store_status_t status);

/* Bytes of segment needed for a data area of `capacity` bytes and a table of
 * `max_objects` entries (rounded as store_segment_init would). */
uint64_t store_segment_size(uint64_t capacity, uint32_t max_objects);

/* Create a new anonymous segment (memfd, close-on-exec) big enough for
 * `capacity` bytes of objects and `max_objects` entries, and format it.
 * max_objects == 0 picks a default from the capacity. On success *fd_out is
 * a descriptor the caller owns; children inherit it or receive it over a
 * Unix socket. The memory is freed by the kernel when the last descriptor
 * and mapping are gone, whatever killed the processes. */
store_status_t store_segment_create(uint64_t capacity, uint32_t max_objects, int *fd_out);

/* Map the segment behind `fd` and claim a client slot for this process.
 * The descriptor is not consumed (the caller may close it after). */
store_status_t store_attach(int fd, store_t **out);

/* Release every pin this process holds, abort the objects it was creating,
 * free its slot, unmap, and free *s. In a forked child this only unmaps
 * (the slot belongs to the parent). s may not be used afterwards. */
void store_detach(store_t *s);

/* Allocate an object of data_size + metadata_size bytes and pin it for the
 * caller, in state CREATED. The caller writes data and metadata, then calls
 * store_seal (or store_abort), and finally store_release. `flags` is a
 * combination of STORE_* flags. */
store_status_t store_create(store_t *s, const uint8_t *id, uint64_t data_size,
                            uint64_t metadata_size, uint32_t flags, store_object_t *out);

/* Make a CREATED object immutable and visible to every process; wakes
 * processes blocked in store_get on it. Only the creating process may seal. */
store_status_t store_seal(store_t *s, const uint8_t *id);

/* Drop a CREATED object (only its creator may). Its pins are gone with it:
 * a later store_release of its handle returns STORE_E_INVALID harmlessly. */
store_status_t store_abort(store_t *s, const uint8_t *id);

/* Pin a SEALED object and describe it in *out. If it is absent or not yet
 * sealed, wait up to timeout_ms (< 0: forever; 0: do not wait) for it to be
 * sealed. Returns STORE_E_NOT_FOUND when timeout_ms == 0 and no such object
 * exists, STORE_E_TIMEOUT when the deadline passed (*exists_out, if not
 * NULL, says whether the object existed unsealed at that point), and
 * STORE_E_INTERRUPTED when a signal woke the wait (call again with the time
 * left). */
store_status_t store_get(store_t *s, const uint8_t *id, int64_t timeout_ms,
                         store_object_t *out, int *exists_out);

/* 1 if obj (from store_create) is still CREATED: not sealed, not aborted. */
int store_is_writable(store_t *s, const store_object_t *obj);

/* Seal a CREATED object and drop the creator's pin in one step (the common
 * put path: create, write, seal, release). */
store_status_t store_seal_release(store_t *s, const store_object_t *obj);

/* store_get returns STORE_SPILLED for an object whose bytes the runtime
 * moved out of the segment (store_mark_spilled, store_create_spilled): *out
 * then has data = metadata = NULL, the sizes, and out->location; no pin is
 * taken (the bytes are not in the segment), so nothing is to be released. */

/* Drop one pin taken by store_get or store_create. When no process pins a
 * deleted object any more, its memory is freed. */
store_status_t store_release(store_t *s, const store_object_t *obj);

/* Remove a SEALED object from view at once; its memory is freed now, or when
 * the last pin is released. A SPILLED object is forgotten at once and its
 * location written to *location_out (if not NULL; else STORE_NO_LOCATION):
 * the caller disposes of the bytes there. */
store_status_t store_delete(store_t *s, const uint8_t *id, uint64_t *location_out);

/* *out = 1 if a SEALED (or SPILLED) object with this ID exists, else 0. */
store_status_t store_contains(store_t *s, const uint8_t *id, int *out);

/* Count, among n IDs (n * STORE_ID_SIZE bytes), those SEALED or SPILLED; if ready_out
 * is not NULL, ready_out[i] = 1 for each sealed one. One lock round trip. */
store_status_t store_count_sealed(store_t *s, const uint8_t *ids, size_t n,
                                  uint8_t *ready_out, size_t *count_out);

/* The segment's seal counter: it changes whenever any object is sealed.
 * Read it, check the objects you wait for, then call store_wait_seal_after
 * with the value read, so that a seal in between is never missed. */
uint32_t store_seal_sequence(store_t *s);

/* Make store_get on this handle spin up to `ns` nanoseconds (watching the
 * seal counter, without the lock) before it sleeps on the futex: a result
 * that comes within that time costs no wake-up. 0 (the default): sleep at
 * once. Worth it only with a CPU to spare for the spinner. */
void store_set_wait_spin(store_t *s, int64_t ns);

/* Block until the seal counter differs from `seq` or timeout_ms passes
 * (< 0: forever). Returns STORE_OK, STORE_E_TIMEOUT or STORE_E_INTERRUPTED.
 * Used to wait for several objects at once. */
store_status_t store_wait_seal_after(store_t *s, uint32_t seq, int64_t timeout_ms);

/* Free evictable, sealed, unpinned objects, least recently used first,
 * until their blocks add up to at least `bytes` (freed blocks coalesce with
 * free neighbours, but need not form one block of that size) or none is
 * left; *freed_out gets the bytes of the blocks freed. */
store_status_t store_evict(store_t *s, uint64_t bytes, uint64_t *freed_out);

/* --- Spilling ------------------------------------------------------------
 * The runtime moves sealed objects out of the segment (to files); the store
 * only records that an object's bytes now live at a `location`, a number
 * that it never interprets. One process, the spiller, does the moving; any
 * process may ask it for room and wait for its rounds.
 *
 *   creator:  store_create -> STORE_E_FULL
 *             store_request_space(bytes, &done) ; store_wait_space(done, ...)
 *             -> create again; if the round ran dry (*exhausted), write the
 *             object elsewhere and store_create_spilled it.
 *   spiller:  store_spill_wait -> store_spill_candidates -> store_get each,
 *             write its bytes out, store_mark_spilled -> store_spill_round_done
 */

/* Up to max_n sealed, unpinned objects that are not evictable, least
 * recently used first, until their blocks add up to `bytes`. Their IDs go to
 * ids_out (max_n * STORE_ID_SIZE bytes) and their block sizes to sizes_out. */
store_status_t store_spill_candidates(store_t *s, uint64_t bytes, size_t max_n, uint8_t *ids_out,
                                      uint64_t *sizes_out, size_t *n_out);

/* obj (pinned by this process through store_get, its only pin anywhere) now
 * lives at `location` (a restored object: its own location, where its copy
 * still is): it becomes SPILLED and its memory is freed; obj may not be
 * released afterwards. STORE_E_BUSY if any other pin exists (a reader
 * came meanwhile: the object stays), STORE_E_NOT_FOUND if it was deleted
 * meanwhile (it goes at obj's release), STORE_E_INVALID if obj is stale. */
store_status_t store_mark_spilled(store_t *s, const store_object_t *obj, uint64_t location);

/* Bring a SPILLED object back into the segment: the caller created `copy`
 * (a CREATED object of the same data and metadata sizes, under an ID of its
 * own, pinned only by its one buffer here) and filled it from the object's
 * file. The object takes the copy's block and is SEALED again, keeping its
 * location (its bytes are on disk too: spilling it again costs no write);
 * the copy's ID is gone. *out is the object, pinned for the caller as by
 * store_get; `copy` may not be used afterwards. STORE_E_STATE if another
 * reader restored it first, STORE_E_NOT_FOUND if it was deleted (abort the
 * copy in both cases), STORE_E_INVALID if `copy` is not as described. */
store_status_t store_restore_commit(store_t *s, const uint8_t *id, const store_object_t *copy,
                                    store_object_t *out);

/* Register an object whose bytes the caller already wrote at `location`
 * (an object that does not fit in the segment): SPILLED and visible at
 * once, waking its waiters. flags: STORE_TAG only. */
store_status_t store_create_spilled(store_t *s, const uint8_t *id, uint64_t data_size,
                                    uint64_t metadata_size, uint64_t location, uint32_t flags);

/* A create that leaves more than `bytes` in use wakes the spiller (0: never). */
void store_set_spill_watermark(store_t *s, uint64_t bytes);

/* Ask the spiller for `bytes` of room and wake it; *done_out gets the
 * number of the last finished round, for store_wait_space. */
store_status_t store_request_space(store_t *s, uint64_t bytes, uint32_t *done_out);

/* Wait until a spill round after `done` finishes, or timeout_ms (< 0:
 * forever). *exhausted_out = 1 when the last round found nothing more it
 * could spill. STORE_OK, STORE_E_TIMEOUT or STORE_E_INTERRUPTED. */
store_status_t store_wait_space(store_t *s, uint32_t done, int64_t timeout_ms, int *exhausted_out);

/* The spiller: wait until woken after `seq` (a value of *seq_out from the
 * last call; 0 at first) or timeout_ms. *seq_out gets the new value and
 * *wanted_out the bytes creators asked room for since (then reset). */
store_status_t store_spill_wait(store_t *s, uint32_t seq, int64_t timeout_ms, uint32_t *seq_out,
                                uint64_t *wanted_out);

/* The spiller finished a round; `exhausted`: it could spill nothing more. */
store_status_t store_spill_round_done(store_t *s, int exhausted);

/* A number never returned before for this segment (1, 2, ...). */
uint64_t store_unique_number(store_t *s);

/* --- Listing ---------------------------------------------------------------- */

/* Describe up to max_n objects (any state but free) from table position
 * *cursor on; *cursor is advanced, and is 0 again when the table is done. */
store_status_t store_list_objects(store_t *s, uint32_t *cursor, store_object_info_t *out,
                                  size_t max_n, size_t *n_out);

/* pids_out[k] = pid of the process in client slot k, or 0 (STORE_MAX_CLIENTS entries). */
store_status_t store_client_pids(store_t *s, int32_t *pids_out);

/* Release the pins and abort the unsealed objects of processes that died
 * while attached; *n_out (if not NULL) gets how many were reaped. */
store_status_t store_reap_dead_clients(store_t *s, uint32_t *n_out);

store_status_t store_stats(store_t *s, store_stats_t *out);

/* This process's client slot (0 <= slot < STORE_MAX_CLIENTS). */
int store_client_slot(const store_t *s);

/* Base address and length of the whole mapping (for diagnostics). */
void store_mapping(const store_t *s, uint8_t **base, uint64_t *length);

/* Check every invariant of the segment under the lock (slow; for tests).
 * Returns STORE_E_INTERNAL and a description in msg (if msg_len > 0). */
store_status_t store_validate(store_t *s, char *msg, size_t msg_len);

/* Copy n bytes from src to dst using up to `threads` threads for large
 * copies (each thread copies a contiguous slice). Call without the GIL. */
void store_parallel_copy(void *dst, const void *src, uint64_t n, int threads);

/* Testing aid: take the segment lock and never release it, as a process
 * killed inside a critical section would. Only for crash tests. */
store_status_t store_debug_lock_and_hold(store_t *s);

/* Testing aid: make this process SIGKILL itself when it reaches crash point
 * `point` (a STORE_CRASH_* value; 0 disables), inside the critical section
 * of a mutation, to test recovery from every step. */
enum {
    STORE_CRASH_NONE = 0,
    STORE_CRASH_CREATE_AFTER_ALLOC,   /* block taken, entry not yet written */
    STORE_CRASH_CREATE_BEFORE_INDEX,  /* entry live, not yet in the index */
    STORE_CRASH_FREE_AFTER_STATE,     /* entry freed, block not yet returned */
    STORE_CRASH_FREE_MID_COALESCE,    /* allocator half way through a merge */
    STORE_CRASH_SEAL_BEFORE_WAKE,     /* sealed, waiters not yet woken */
    STORE_CRASH_PIN_MID_UPDATE,       /* pin bit set, count not yet updated */
    STORE_CRASH_SPILL_AFTER_STATE,    /* marked spilled, its block not yet freed */
    STORE_CRASH_RESTORE_MID_MOVE,     /* restoring: the copy's entry freed, the object not yet sealed */
    STORE_CRASH_POINT_COUNT
};
void store_debug_set_crash_point(int point);

#ifdef __cplusplus
}
#endif
#endif /* SHOAL_STORE_H */
