/*
 * segment.c - making, mapping and unmapping the segment; client slots.
 *
 * The segment is a memfd: it has no name in /dev/shm, so nothing can leak
 * there whatever kills the processes; the kernel frees the memory when the
 * last descriptor and mapping are gone. Pages are allocated on first touch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#include "table.h"

volatile uint64_t store_fork_epoch = 0;
int store_crash_point = 0;

void store_debug_set_crash_point(int point) { store_crash_point = point; }

void crash_now(void) {
    kill(getpid(), SIGKILL);
    for (;;) pause();
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { store_fork_epoch++; }
static void register_atfork(void) { pthread_atfork(0, 0, on_fork_child); }

#define PAGE 4096u

typedef struct {
    uint64_t slots, entries, index, data, total;
    uint32_t nbuckets;
} layout_t;

static uint32_t default_max_objects(uint64_t capacity) {
    uint64_t n = capacity / 2048;
    if (n < 65536) n = 65536;
    if (n > (1u << 22)) n = 1u << 22;
    return (uint32_t)n;
}

static layout_t compute_layout(uint64_t capacity, uint32_t max_objects) {
    layout_t l;
    uint32_t nb = 1;
    while (nb < max_objects) nb <<= 1;
    l.nbuckets = nb;
    l.slots = round_up(sizeof(header_t), STORE_ALIGNMENT);
    l.entries = round_up(l.slots + sizeof(slot_t) * STORE_MAX_CLIENTS, STORE_ALIGNMENT);
    l.index = round_up(l.entries + (uint64_t)sizeof(entry_t) * max_objects, STORE_ALIGNMENT);
    l.data = round_up(l.index + sizeof(uint32_t) * (uint64_t)nb, PAGE);
    l.total = l.data + round_up(capacity, PAGE);
    return l;
}

uint64_t store_segment_size(uint64_t capacity, uint32_t max_objects) {
    if (max_objects == 0) max_objects = default_max_objects(capacity);
    return compute_layout(capacity, max_objects).total;
}

static store_status_t map_fd(int fd, uint64_t size, uint8_t **base) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) return STORE_E_SYS;
    *base = p;
    return STORE_OK;
}

static store_status_t format_segment(uint8_t *base, const layout_t *l, uint64_t capacity,
                                     uint32_t max_objects) {
    header_t *h = (header_t *)base;
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (!rc) rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!rc) rc = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc) {
        errno = rc;
        return STORE_E_SYS;
    }
    h->version = SEG_VERSION;
    h->max_entries = max_objects;
    h->segment_size = l->total;
    h->slots_offset = l->slots;
    h->entries_offset = l->entries;
    h->index_offset = l->index;
    h->data_offset = l->data;
    h->data_size = round_up(capacity, PAGE);
    h->index_mask = l->nbuckets - 1;
    h->holder_slot = NONE32;
    h->free_entries = NONE32;
    h->lru_head = h->lru_tail = NONE32;
    h->spill_head = h->spill_tail = NONE32;
    /* The index must read as empty: 0xff bytes are NONE32. Only these pages
     * are touched now; entries and data stay unfaulted until used. */
    memset(base + l->index, 0xff, sizeof(uint32_t) * (uint64_t)l->nbuckets);
    struct store tmp = {.base = base, .h = h, .data = base + l->data};
    arena_init(&tmp);
    __atomic_store_n(&h->magic, SEG_MAGIC, __ATOMIC_RELEASE); /* last: marks it usable */
    return STORE_OK;
}

store_status_t store_segment_create(uint64_t capacity, uint32_t max_objects, int *fd_out) {
    if (capacity < MIN_BLOCK || capacity > (1ULL << 46)) return STORE_E_INVALID;
    if (max_objects == 0) max_objects = default_max_objects(capacity);
    if (max_objects > MAX_OBJECTS_LIMIT) return STORE_E_INVALID;
    layout_t l = compute_layout(capacity, max_objects);
    int fd = memfd_create("shoal-store", MFD_CLOEXEC);
    if (fd < 0) return STORE_E_SYS;
    uint8_t *base;
    store_status_t st = STORE_E_SYS;
    /* Owner only (a memfd is born 0777): should its /proc/<pid>/fd link be
     * reachable by another user, opening it still fails. */
    if (fchmod(fd, 0600) == 0 && ftruncate(fd, (off_t)l.total) == 0 &&
        (st = map_fd(fd, l.total, &base)) == STORE_OK) {
        st = format_segment(base, &l, capacity, max_objects);
        munmap(base, l.total);
    }
    if (st != STORE_OK) {
        int saved = errno;
        close(fd);
        errno = saved;
        return st;
    }
    *fd_out = fd;
    return STORE_OK;
}

uint64_t process_start_time(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ESRCH ? 0 : START_TIME_UNKNOWN;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p || p[1] != ' ') return 0;
    char state = p[2];
    if (state == 'Z' || state == 'X' || state == 'x') return 0; /* dead, not yet reaped */
    /* Field 3 is the state; the start time is field 22. */
    p += 2;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p) return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

int client_alive(const slot_t *slot) {
    /* Our own pid: alive if it is us, not a dead process whose pid we reuse. */
    if (slot->pid == getpid()) return slot->start_time == process_start_time(getpid());
    uint64_t start = process_start_time(slot->pid);
    if (start == START_TIME_UNKNOWN) return 1; /* cannot tell (out of fds, ...): keep its records */
    return start != 0 && start == slot->start_time;
}

static store_status_t claim_slot(struct store *s) {
    header_t *h = s->h;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < STORE_MAX_CLIENTS; i++) {
            slot_t *sl = &s->slots[i];
            if (sl->used) continue;
            memset(sl, 0, sizeof *sl);
            sl->pid = getpid();
            sl->start_time = process_start_time(sl->pid);
            sl->used = 1;
            s->slot = i;
            return STORE_OK;
        }
        if (pass == 0 && reap_dead_locked(s) == 0) break;
    }
    (void)h;
    return STORE_E_CLIENTS_FULL;
}

store_status_t store_attach(int fd, store_t **out) {
    pthread_once(&atfork_once, register_atfork);
    struct stat st;
    if (fstat(fd, &st) != 0) return STORE_E_SYS;
    if ((uint64_t)st.st_size < sizeof(header_t)) return STORE_E_BAD_SEGMENT;
    uint64_t size = (uint64_t)st.st_size;
    uint8_t *base;
    store_status_t rc = map_fd(fd, size, &base);
    if (rc != STORE_OK) return rc;
    header_t *h = (header_t *)base;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SEG_MAGIC || h->version != SEG_VERSION ||
        h->segment_size != size) {
        munmap(base, size);
        return STORE_E_BAD_SEGMENT;
    }
    struct store *s = calloc(1, sizeof *s);
    if (!s) {
        munmap(base, size);
        errno = ENOMEM;
        return STORE_E_SYS;
    }
    s->base = base;
    s->length = size;
    s->h = h;
    s->slots = (slot_t *)(base + h->slots_offset);
    s->entries = (entry_t *)(base + h->entries_offset);
    s->index = (uint32_t *)(base + h->index_offset);
    s->data = base + h->data_offset;
    s->fork_epoch = store_fork_epoch;
    /* Map the header, slots and index now (their pages exist since format):
     * one batched call instead of a minor fault at each first touch of an
     * index page, which would otherwise add microseconds to early puts. */
    uint64_t index_page = h->index_offset / PAGE * PAGE;
    madvise(base, round_up(h->entries_offset, PAGE), MADV_POPULATE_WRITE);
    madvise(base + index_page, h->data_offset - index_page, MADV_POPULATE_WRITE);
    s->local_pins_bytes = round_up(sizeof(uint32_t) * (uint64_t)h->max_entries, PAGE);
    void *lp = mmap(NULL, s->local_pins_bytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (lp == MAP_FAILED) {
        int saved = errno;
        munmap(base, size);
        free(s);
        errno = saved;
        return STORE_E_SYS;
    }
    s->local_pins = lp;
    s->slot = -1;
    rc = seg_lock(s);
    if (rc == STORE_OK) {
        rc = claim_slot(s);
        seg_unlock(s);
    }
    if (rc != STORE_OK) {
        int saved = errno;
        munmap(lp, s->local_pins_bytes);
        munmap(base, size);
        free(s);
        errno = saved;
        return rc;
    }
    *out = s;
    return STORE_OK;
}

void store_detach(store_t *s) {
    if (!s) return;
    if (!s->closed && s->fork_epoch == store_fork_epoch && seg_lock(s) == STORE_OK) {
        release_own_locked(s);
        s->slots[s->slot].used = 0;
        seg_unlock(s);
    }
    munmap(s->local_pins, s->local_pins_bytes);
    munmap(s->base, s->length);
    free(s);
}

int store_client_slot(const store_t *s) { return s->slot; }

void store_mapping(const store_t *s, uint8_t **base, uint64_t *length) {
    *base = s->base;
    *length = s->length;
}

int futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t timeout_ns) {
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    if (syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, tp, NULL, 0) == 0) return 0;
    return errno == EAGAIN ? 0 : errno;
}

void futex_wake_all(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}
