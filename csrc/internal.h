/*
 * internal.h - helpers shared by the store's translation units: locking
 * with crash recovery, futexes, process liveness and the fork epoch.
 */
#ifndef SHOAL_INTERNAL_H
#define SHOAL_INTERNAL_H

#include "layout.h"

/* Incremented in every forked child (pthread_atfork): a handle whose epoch
 * differs was made by an ancestor and must not touch the shared state. */
extern volatile uint64_t store_fork_epoch;

/* Validate a handle before use: closed, forked, or fine. */
static inline store_status_t handle_check(const struct store *s) {
    if (s == 0 || s->closed) return STORE_E_CLOSED;
    if (s->fork_epoch != store_fork_epoch) return STORE_E_FORKED;
    return STORE_OK;
}

/* Take the segment lock. If its previous owner died inside a critical
 * section, rebuild the derived state and reap dead clients first. */
store_status_t seg_lock(struct store *s);
void seg_unlock(struct store *s);

/* In a function returning store_status_t: return early on a bad handle, or
 * when the lock cannot be taken. */
#define CHECK(s)                                     \
    do {                                             \
        store_status_t check_rc_ = handle_check(s);   \
        if (check_rc_ != STORE_OK) return check_rc_; \
    } while (0)

#define LOCK(s)                                    \
    do {                                           \
        store_status_t lock_rc_ = seg_lock(s);     \
        if (lock_rc_ != STORE_OK) return lock_rc_; \
    } while (0)

/* Rebuild everything derivable from the entries (recover.c). */
void recover_locked(struct store *s);

/* Reap every client slot whose process is gone; returns how many. */
uint32_t reap_dead_locked(struct store *s);

/* Drop a client's pins and abort the objects it was creating: for another
 * (dead) client by scanning the table, for this process from its own pins. */
void release_client_locked(struct store *s, int slot);
void release_own_locked(struct store *s);

/* 1 if the process recorded in the slot still runs (not a zombie, same
 * start time), else 0. */
int client_alive(const slot_t *slot);

/* Start time (clock ticks after boot) of a process, 0 if unknown. */
/* Start time of pid (clock ticks since boot); 0 when it is dead or gone,
 * START_TIME_UNKNOWN when /proc could not be read for another reason. */
#define START_TIME_UNKNOWN UINT64_MAX
uint64_t process_start_time(pid_t pid);

/* Wait while *addr == val, for at most timeout_ns (< 0: forever). Returns 0
 * when woken or the value changed, else ETIMEDOUT or EINTR. */
int futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t timeout_ns);
void futex_wake_all(_Atomic uint32_t *addr);

/* Bump a futex word and wake its waiters (under the lock). */
void signal_seal_locked(struct store *s, const uint8_t *id);

/* Wake the spiller if it sleeps (under the lock; spill.c). */
void call_spiller_locked(struct store *s);

/* Block while *word == seq, for at most timeout_ms (< 0: forever), counted
 * as waiter w (a WAIT_* index) so that wakers and recovery know of us.
 * Takes the lock itself. STORE_OK, STORE_E_TIMEOUT or STORE_E_INTERRUPTED. */
store_status_t wait_word(struct store *s, _Atomic uint32_t *word, int w, uint32_t seq,
                         int64_t timeout_ms);

/* Crash-test hook: SIGKILL this process at a chosen point (store.h). */
extern int store_crash_point;
void crash_now(void);
#define CRASH_POINT(p)                                              \
    do {                                                            \
        if (__builtin_expect(store_crash_point == (p), 0)) crash_now(); \
    } while (0)

static inline int wait_bucket(const uint8_t *id) { return (int)(id_hash(id) >> 58); }

#endif
