/*
 * arena.h - the allocator of the data area: boundary-tagged blocks in
 * segregated LIFO free lists. Freed blocks coalesce with free neighbours at
 * once; the block freed last is reused first, because its pages are already
 * faulted in (a copy into fresh shared pages runs several times slower than
 * into warm ones). Callers hold the segment lock.
 */
#ifndef SHOAL_ARENA_H
#define SHOAL_ARENA_H

#include "layout.h"

/* Make the whole data area one free block. */
void arena_init(struct store *s);

/* Offset of a block of at least `size` bytes (a multiple of the alignment),
 * or NONE64 if no free block is big enough. The block's real size, which may
 * exceed `size`, is block_at(s, off)->size. */
uint64_t arena_alloc(struct store *s, uint64_t size, uint32_t entry);

/* Return a block to the free lists, merging it with free neighbours. */
void arena_free(struct store *s, uint64_t off);

/* Size of the biggest free block (0 if none). */
uint64_t arena_largest_free(struct store *s);

/* Rewrite every block header and free list from the live entries `live`
 * (n indices sorted by block offset, not overlapping): the gaps become free. */
void arena_rebuild(struct store *s, const uint32_t *live, uint32_t n);

/* Check headers, coalescing and free lists; 0 if sound, else writes msg. */
int arena_validate(struct store *s, uint64_t *allocated_blocks, char *msg, size_t len);

#endif
