/*
 * channel.h - single-producer, single-consumer message rings in shared
 * memory, for the runtime's messages between two processes.
 *
 * A ring carries length-prefixed messages. Sending is a copy and a release
 * store, with no system call unless the consumer sleeps: each side sleeps on
 * an eventfd of its own after setting its ring's waiting flag, and the other
 * side writes that eventfd only when it sees the flag (store, full fence,
 * load on both sides, so no wake-up is lost). A consumer may spin briefly
 * before sleeping: a message that arrives within the spin costs no wake-up.
 *
 * Rings are independent of the object store; a process may die at any
 * instruction without harming its peer (the peer learns of the death by
 * other means: the runtime watches its processes).
 */
#ifndef SHOAL_CHANNEL_H
#define SHOAL_CHANNEL_H

#include <stdint.h>

#define RING_HEADER_BYTES 256u
#define RING_MIN_CAPACITY 4096u

typedef struct ring ring_t;

/* Bytes of shared memory for a ring of `capacity` bytes (a power of two). */
uint64_t ring_footprint(uint32_t capacity);

/* Format a ring at `mem` (footprint bytes, 64-byte aligned). 0 or EINVAL. */
int ring_init(void *mem, uint32_t capacity);

/* Check that `mem` holds a formatted ring; its capacity, or 0 if not. */
uint32_t ring_capacity(const void *mem);

/* Every call below takes `cap`, the capacity that the caller read once when
 * it formatted or attached the ring: the copy in shared memory may have been
 * overwritten by the other process, and is never trusted after attaching. */

/* Largest message a ring of this capacity takes. */
uint32_t ring_max_message(uint32_t cap);

/* Append a message; wakes the consumer through wake_fd (>= 0) if it sleeps.
 * Returns 0, EAGAIN if there is no room now, or EMSGSIZE if it can never fit. */
int ring_send(ring_t *r, uint32_t cap, const void *msg, uint32_t len, int wake_fd);

/* The oldest message, without removing it: 0 and (*msg, *len), EAGAIN, or
 * EBADMSG if the producer's words are inconsistent (a frame longer than the
 * ring or than what was written, a tail behind the head): the ring is
 * corrupt and nothing more can be read from it. *msg..*msg+*len is always
 * inside the ring. */
int ring_peek(ring_t *r, uint32_t cap, const uint8_t **msg, uint32_t *len);

/* Remove the message of `len` bytes that ring_peek returned; wakes a
 * producer waiting for room through wake_fd (>= 0) if it sleeps. */
void ring_consume(ring_t *r, uint32_t len, int wake_fd);

/* Wait until a message is readable: spin up to spin_ns, then sleep on
 * own_fd up to timeout_ns (< 0: forever). Returns 0, ETIMEDOUT or EINTR.
 * Call without the GIL. */
int ring_wait_readable(ring_t *r, int own_fd, int64_t spin_ns, int64_t timeout_ns);

/* Wait until `len` bytes of message fit, sleeping on own_fd. As above. */
int ring_wait_writable(ring_t *r, uint32_t cap, uint32_t len, int own_fd, int64_t timeout_ns);

/* For a consumer that sleeps in its own poll loop: announce the sleep
 * (returns 1 if a message is already there, in which case do not sleep),
 * and end it after waking. */
int ring_prepare_sleep(ring_t *r);
void ring_end_sleep(ring_t *r);

/* Bytes queued, and whether the ring is empty. */
uint64_t ring_used(const ring_t *r);

/* A word of the ring header free for the two sides' own use (the runtime
 * keeps the sequence number of the task a worker is running there). */
void ring_set_user_word(ring_t *r, uint64_t value);
uint64_t ring_user_word(const ring_t *r);

/* Make this process receive `sig` when its parent dies (0 on success). */
int proc_set_parent_death_signal(int sig);

/* Outlive the parent, not `keeper`: when the parent dies the kernel
 * sends `sig` (PR_SET_PDEATHSIG), whose handler kills this process with
 * SIGKILL unless its new parent is `keeper` (a subreaper that adopted it).
 * The signal fires again at each later parent death, so the process dies
 * with the keeper too. The handler is async-signal-safe C: it acts even
 * while the process runs native code. 0 on success, else an errno. */
int proc_die_with(int keeper, int sig);

/* prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to
 * this process instead of init. proc_child_subreaper returns the current
 * setting (0 or 1), or -errno. */
int proc_set_child_subreaper(int on);
int proc_child_subreaper(void);

#endif
