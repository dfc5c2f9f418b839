/*
 * copy.c - large copies split over threads. On this class of machine one
 * thread copies into warm shared pages at about 20 GB/s and into fresh ones
 * at about 1 GB/s (page faults); two threads fault and copy in parallel, so
 * big puts use several.
 */
#include <pthread.h>
#include <string.h>

#include "store.h"

#define MAX_COPY_THREADS 16
#define MIN_SLICE (4u << 20) /* below this per thread, a thread costs more than it saves */

typedef struct {
    uint8_t *dst;
    const uint8_t *src;
    uint64_t n;
} slice_t;

static void *copy_slice(void *arg) {
    slice_t *sl = arg;
    memcpy(sl->dst, sl->src, sl->n);
    return NULL;
}

void store_parallel_copy(void *dst, const void *src, uint64_t n, int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_COPY_THREADS) threads = MAX_COPY_THREADS;
    if ((uint64_t)threads > n / MIN_SLICE) threads = (int)(n / MIN_SLICE);
    if (threads <= 1) {
        memcpy(dst, src, n);
        return;
    }
    /* page-aligned slices, rounded up so that they cover all n bytes */
    uint64_t chunk = ((n + (uint64_t)threads - 1) / (uint64_t)threads + 4095) & ~4095ULL;
    slice_t sl[MAX_COPY_THREADS];
    pthread_t tid[MAX_COPY_THREADS];
    int started[MAX_COPY_THREADS] = {0};
    for (int k = 0; k < threads; k++) {
        uint64_t off = chunk * (uint64_t)k;
        sl[k].dst = (uint8_t *)dst + off;
        sl[k].src = (const uint8_t *)src + off;
        sl[k].n = off >= n ? 0 : (n - off < chunk || k == threads - 1 ? n - off : chunk);
    }
    for (int k = 1; k < threads; k++)
        started[k] = pthread_create(&tid[k], NULL, copy_slice, &sl[k]) == 0;
    copy_slice(&sl[0]);
    for (int k = 1; k < threads; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else copy_slice(&sl[k]); /* could not start a thread: copy here */
    }
}
