/* channel.c - see channel.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "clock.h"

#define RING_MAGIC 0x474e4952u /* "RING" */
#define WRAP 0xFFFFFFFFu       /* length word: skip to the start of the ring */
#define FRAME 8u               /* length word + padding before each message */

struct ring {
    _Atomic uint64_t tail; /* bytes ever written: the producer's */
    uint8_t pad0[56];
    _Atomic uint64_t head; /* bytes ever consumed: the consumer's */
    uint8_t pad1[56];
    _Atomic uint32_t consumer_waiting;
    _Atomic uint32_t producer_waiting;
    uint8_t pad2[56];
    uint32_t magic;
    uint32_t capacity;
    _Atomic uint64_t user_word;
    uint8_t pad3[48];
    uint8_t data[];
};

_Static_assert(sizeof(struct ring) == RING_HEADER_BYTES, "ring header size");

static inline uint32_t frame_size(uint32_t len) { return FRAME + ((len + 7u) & ~7u); }


static void wake(int fd) {
    uint64_t one = 1;
    if (fd >= 0) {
        ssize_t n = write(fd, &one, sizeof one);
        (void)n; /* EAGAIN: the counter is already non-zero, the peer will wake */
    }
}

static void drain_fd(int fd) {
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v); /* eventfds are non-blocking here */
    (void)n;
}

uint64_t ring_footprint(uint32_t capacity) { return RING_HEADER_BYTES + (uint64_t)capacity; }

int ring_init(void *mem, uint32_t capacity) {
    if (capacity < RING_MIN_CAPACITY || (capacity & (capacity - 1)) || ((uintptr_t)mem & 63))
        return EINVAL;
    ring_t *r = mem;
    memset(r, 0, RING_HEADER_BYTES);
    r->capacity = capacity;
    __atomic_store_n(&r->magic, RING_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

uint32_t ring_capacity(const void *mem) {
    const ring_t *r = mem;
    return __atomic_load_n(&r->magic, __ATOMIC_ACQUIRE) == RING_MAGIC ? r->capacity : 0;
}

uint32_t ring_max_message(uint32_t cap) { return cap / 2 - FRAME; }

int ring_send(ring_t *r, uint32_t cap, const void *msg, uint32_t len, int wake_fd) {
    if (len > ring_max_message(cap)) return EMSGSIZE;
    uint32_t need = frame_size(len);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t idx = (uint32_t)(tail & (cap - 1));
    uint32_t skip = cap - idx < need ? cap - idx : 0; /* no room at the end: wrap */
    if (cap - (tail - head) < (uint64_t)skip + need) return EAGAIN;
    if (skip) {
        *(uint32_t *)(r->data + idx) = WRAP;
        tail += skip;
        idx = 0;
    }
    *(uint32_t *)(r->data + idx) = len;
    memcpy(r->data + idx + FRAME, msg, len);
    atomic_store_explicit(&r->tail, tail + need, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->consumer_waiting, memory_order_relaxed)) wake(wake_fd);
    return 0;
}

/* The producer's words (tail, lengths) are read once each and checked
 * against the capacity the consumer trusts, so that a producer that wrote
 * garbage into the ring cannot make the consumer read outside it. */
int ring_peek(ring_t *r, uint32_t cap, const uint8_t **msg, uint32_t *len) {
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (head == tail) return EAGAIN;
    if (tail - head > cap || ((head | tail) & (FRAME - 1))) return EBADMSG;
    uint32_t idx = (uint32_t)(head & (cap - 1));
    uint32_t n = __atomic_load_n((uint32_t *)(r->data + idx), __ATOMIC_RELAXED);
    if (n == WRAP) {
        head += cap - idx;
        if (head > tail) return EBADMSG;
        atomic_store_explicit(&r->head, head, memory_order_release);
        if (head == tail) return EAGAIN;
        idx = 0;
        n = __atomic_load_n((uint32_t *)(r->data), __ATOMIC_RELAXED);
    }
    if (n > ring_max_message(cap) || frame_size(n) > tail - head || frame_size(n) > cap - idx)
        return EBADMSG;
    *msg = r->data + idx + FRAME;
    *len = n;
    return 0;
}

void ring_consume(ring_t *r, uint32_t len, int wake_fd) {
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    atomic_store_explicit(&r->head, head + frame_size(len), memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->producer_waiting, memory_order_relaxed)) wake(wake_fd);
}

static int has_message(ring_t *r) {
    return atomic_load_explicit(&r->tail, memory_order_acquire) !=
           atomic_load_explicit(&r->head, memory_order_relaxed);
}

static int sleep_on(int fd, int64_t deadline) {
    int ms = -1;
    if (deadline >= 0) {
        int64_t left = deadline - now_ns();
        if (left <= 0) return ETIMEDOUT;
        left = (left + 999999) / 1000000;
        ms = left > (1 << 30) ? (1 << 30) : (int)left; /* poll takes an int of ms */
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, ms);
    if (n < 0) return errno;
    if (n > 0 && (p.revents & (POLLNVAL | POLLERR))) return EBADF; /* would wake at once forever */
    if (n > 0) drain_fd(fd);
    return 0;
}

/* Absolute deadline for a timeout (< 0, or too long to add: none). */
static int64_t deadline_after(int64_t start, int64_t timeout_ns) {
    return timeout_ns < 0 || timeout_ns > INT64_MAX / 2 ? -1 : start + timeout_ns;
}

int ring_wait_readable(ring_t *r, int own_fd, int64_t spin_ns, int64_t timeout_ns) {
    int64_t start = now_ns();
    int64_t deadline = deadline_after(start, timeout_ns);
    if (has_message(r)) return 0;
    for (int64_t spin_end = start + spin_ns; now_ns() < spin_end;) {
        for (int k = 0; k < 64; k++) cpu_relax();
        if (has_message(r)) return 0;
    }
    for (;;) {
        atomic_store_explicit(&r->consumer_waiting, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (has_message(r)) break;
        int rc = sleep_on(own_fd, deadline);
        if (rc != 0) { /* EINTR, ETIMEDOUT, or a broken descriptor */
            atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed);
            return has_message(r) ? 0 : rc;
        }
    }
    atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed);
    return 0;
}

static int has_room(ring_t *r, uint32_t cap, uint32_t len) {
    uint32_t need = frame_size(len);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t idx = (uint32_t)(tail & (cap - 1));
    uint32_t skip = cap - idx < need ? cap - idx : 0;
    return cap - (tail - head) >= (uint64_t)skip + need;
}

int ring_wait_writable(ring_t *r, uint32_t cap, uint32_t len, int own_fd, int64_t timeout_ns) {
    if (len > ring_max_message(cap)) return EMSGSIZE;
    int64_t deadline = deadline_after(now_ns(), timeout_ns);
    for (;;) {
        atomic_store_explicit(&r->producer_waiting, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (has_room(r, cap, len)) break;
        int rc = sleep_on(own_fd, deadline);
        if (rc != 0) { /* EINTR, ETIMEDOUT, or a broken descriptor */
            atomic_store_explicit(&r->producer_waiting, 0, memory_order_relaxed);
            return has_room(r, cap, len) ? 0 : rc;
        }
    }
    atomic_store_explicit(&r->producer_waiting, 0, memory_order_relaxed);
    return 0;
}

int ring_prepare_sleep(ring_t *r) {
    atomic_store_explicit(&r->consumer_waiting, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (has_message(r)) {
        atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed);
        return 1;
    }
    return 0;
}

void ring_end_sleep(ring_t *r) { atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed); }

uint64_t ring_used(const ring_t *r) {
    return atomic_load_explicit(&((ring_t *)r)->tail, memory_order_acquire) -
           atomic_load_explicit(&((ring_t *)r)->head, memory_order_acquire);
}

void ring_set_user_word(ring_t *r, uint64_t value) {
    atomic_store_explicit(&r->user_word, value, memory_order_release);
}

uint64_t ring_user_word(const ring_t *r) {
    return atomic_load_explicit(&((ring_t *)r)->user_word, memory_order_acquire);
}

int proc_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0 ? 0 : errno; }

static volatile sig_atomic_t keeper_pid;

static void on_parent_death(int sig) {
    (void)sig;
    if (getppid() != (pid_t)keeper_pid)
        kill(getpid(), SIGKILL);
}

int proc_die_with(int keeper, int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_parent_death;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    keeper_pid = keeper;
    if (sigaction(sig, &sa, NULL))
        return errno;
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0 ? 0 : errno;
}

int proc_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0) == 0 ? 0 : errno; }

int proc_child_subreaper(void) {
    int on = 0;
    return prctl(PR_GET_CHILD_SUBREAPER, (unsigned long)&on, 0, 0, 0) == 0 ? on : -errno;
}
