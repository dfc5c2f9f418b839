# Declarations of csrc/store.h, nothing else. See store.h for the contract
# of each function (ownership, caller obligations, status codes).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "store.h" nogil:
    enum:
        STORE_ID_SIZE
        STORE_ALIGNMENT
        STORE_MAX_CLIENTS
        STORE_EVICTABLE
    uint64_t STORE_NO_LOCATION
    uint32_t STORE_TAG(uint32_t t)

    ctypedef enum store_status_t:
        STORE_OK
        STORE_E_EXISTS
        STORE_E_NOT_FOUND
        STORE_E_STATE
        STORE_E_NOT_OWNER
        STORE_E_FULL
        STORE_E_TOO_LARGE
        STORE_E_TABLE_FULL
        STORE_E_CLIENTS_FULL
        STORE_E_TIMEOUT
        STORE_E_INTERRUPTED
        STORE_E_INVALID
        STORE_E_FORKED
        STORE_E_CLOSED
        STORE_E_BAD_SEGMENT
        STORE_E_SYS
        STORE_E_INTERNAL
        STORE_SPILLED
        STORE_E_BUSY

    ctypedef struct store_t:
        pass

    ctypedef struct store_object_t:
        uint32_t index
        uint32_t generation
        uint8_t *data
        uint64_t data_size
        uint8_t *metadata
        uint64_t metadata_size
        uint64_t location

    ctypedef struct store_stats_t:
        uint64_t capacity_bytes
        uint64_t bytes_in_use
        uint64_t bytes_pinned
        uint64_t bytes_evictable
        uint64_t num_created
        uint64_t num_sealed
        uint64_t num_deleted_pinned
        uint64_t num_evictions
        uint64_t num_recoveries
        uint64_t num_clients
        uint64_t max_objects
        uint64_t largest_free_block
        uint64_t bytes_spillable
        uint64_t num_spilled
        uint64_t bytes_spilled
        uint64_t num_fallback
        uint64_t spill_watermark

    ctypedef struct store_object_info_t:
        uint8_t id[20]
        uint32_t state
        uint32_t flags
        uint32_t npins
        uint64_t data_size
        uint64_t metadata_size
        uint64_t block_size
        uint64_t location
        uint64_t pins[4]

    const char *store_strerror(store_status_t status)
    uint64_t store_segment_size(uint64_t capacity, uint32_t max_objects)
    store_status_t store_segment_create(uint64_t capacity, uint32_t max_objects, int *fd_out)
    store_status_t store_attach(int fd, store_t **out)
    void store_detach(store_t *s)
    store_status_t store_create(store_t *s, const uint8_t *id, uint64_t data_size,
                                uint64_t metadata_size, uint32_t flags, store_object_t *out)
    store_status_t store_seal(store_t *s, const uint8_t *id)
    store_status_t store_abort(store_t *s, const uint8_t *id)
    store_status_t store_get(store_t *s, const uint8_t *id, int64_t timeout_ms,
                             store_object_t *out, int *exists_out)
    store_status_t store_release(store_t *s, const store_object_t *obj)
    store_status_t store_delete(store_t *s, const uint8_t *id, uint64_t *location_out)
    store_status_t store_contains(store_t *s, const uint8_t *id, int *out)
    store_status_t store_count_sealed(store_t *s, const uint8_t *ids, size_t n,
                                      uint8_t *ready_out, size_t *count_out)
    uint32_t store_seal_sequence(store_t *s)
    void store_set_wait_spin(store_t *s, int64_t ns)
    store_status_t store_wait_seal_after(store_t *s, uint32_t seq, int64_t timeout_ms)
    store_status_t store_evict(store_t *s, uint64_t bytes, uint64_t *freed_out)
    store_status_t store_reap_dead_clients(store_t *s, uint32_t *n_out)
    store_status_t store_stats(store_t *s, store_stats_t *out)
    int store_client_slot(const store_t *s)
    void store_mapping(const store_t *s, uint8_t **base, uint64_t *length)
    store_status_t store_validate(store_t *s, char *msg, size_t msg_len)
    void store_parallel_copy(void *dst, const void *src, uint64_t n, int threads)
    store_status_t store_debug_lock_and_hold(store_t *s)
    int store_is_writable(store_t *s, const store_object_t *obj)
    store_status_t store_seal_release(store_t *s, const store_object_t *obj)
    void store_debug_set_crash_point(int point)
    store_status_t store_spill_candidates(store_t *s, uint64_t bytes, size_t max_n, uint8_t *ids_out,
                                          uint64_t *sizes_out, size_t *n_out)
    store_status_t store_mark_spilled(store_t *s, const store_object_t *obj, uint64_t location)
    store_status_t store_restore_commit(store_t *s, const uint8_t *id, const store_object_t *copy,
                                        store_object_t *out)
    store_status_t store_create_spilled(store_t *s, const uint8_t *id, uint64_t data_size,
                                        uint64_t metadata_size, uint64_t location, uint32_t flags)
    void store_set_spill_watermark(store_t *s, uint64_t bytes)
    store_status_t store_request_space(store_t *s, uint64_t bytes, uint32_t *done_out)
    store_status_t store_wait_space(store_t *s, uint32_t done, int64_t timeout_ms, int *exhausted_out)
    store_status_t store_spill_wait(store_t *s, uint32_t seq, int64_t timeout_ms, uint32_t *seq_out,
                                    uint64_t *wanted_out)
    store_status_t store_spill_round_done(store_t *s, int exhausted)
    uint64_t store_unique_number(store_t *s)
    store_status_t store_list_objects(store_t *s, uint32_t *cursor, store_object_info_t *out,
                                      size_t max_n, size_t *n_out)
    store_status_t store_client_pids(store_t *s, int32_t *pids_out)
