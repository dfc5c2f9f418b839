/*
 * table.h - the object table: ID index, entry free list, LRU list, pins and
 * the statistics that follow each state change. Callers hold the segment
 * lock. Every mutation writes the entry's state in one store, last when an
 * object appears and first when it goes, so that recover.c can rebuild the
 * rest from the entries after a crash at any instruction.
 */
#ifndef SHOAL_TABLE_H
#define SHOAL_TABLE_H

#include "layout.h"

static inline entry_t *entry_at(struct store *s, uint32_t i) { return &s->entries[i]; }

/* Index of the CREATED, SEALED or SPILLED object with this ID, or NONE32. */
uint32_t table_lookup(struct store *s, const uint8_t *id);
void table_index_insert(struct store *s, uint32_t i);
void table_index_remove(struct store *s, uint32_t i);

/* A free entry (generation bumped, state still FREE), or NONE32. */
uint32_t table_entry_alloc(struct store *s);

/* Move an entry to a new state, keeping the per-state counters right. */
void table_set_state(struct store *s, uint32_t i, uint32_t state);

/* Pin for client `slot` (idempotent per slot). */
void table_pin(struct store *s, uint32_t i, int slot);
/* Unpin for client `slot`; frees a deleted object, and puts a sealed one on
 * its list (evictable or spillable) when nobody pins it any more. */
void table_unpin(struct store *s, uint32_t i, int slot);

/* Forget the object: off the index and LRU, memory and entry freed. */
void table_free_object(struct store *s, uint32_t i);

/* Put a sealed, unpinned object at the most-recent end of its list (the
 * evictable one, or the spillable one when it is not evictable); a restored
 * object, whose bytes are on disk too, at the least-recent end instead. */
void table_lru_push(struct store *s, uint32_t i);
void table_lru_remove(struct store *s, uint32_t i);

#endif
