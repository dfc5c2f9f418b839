/* status.c - names of store statuses. */
#include "store.h"

static const char *const names[STORE_STATUS_COUNT] = {
    [STORE_OK] = "ok",
    [STORE_E_EXISTS] = "an object with this ID already exists",
    [STORE_E_NOT_FOUND] = "no object with this ID",
    [STORE_E_STATE] = "the object is in the wrong state for this operation",
    [STORE_E_NOT_OWNER] = "the object is being created by another process",
    [STORE_E_FULL] = "the store is full",
    [STORE_E_TOO_LARGE] = "the object is larger than the store",
    [STORE_E_TABLE_FULL] = "the object table is full",
    [STORE_E_CLIENTS_FULL] = "every client slot is taken",
    [STORE_E_TIMEOUT] = "timed out",
    [STORE_E_INTERRUPTED] = "interrupted by a signal",
    [STORE_E_INVALID] = "invalid argument",
    [STORE_E_FORKED] = "store handle used in a forked child",
    [STORE_E_CLOSED] = "store handle is closed",
    [STORE_E_BAD_SEGMENT] = "not a shoal store segment (or another version)",
    [STORE_E_SYS] = "operating system error",
    [STORE_E_INTERNAL] = "internal error",
    [STORE_SPILLED] = "the object's bytes are outside the segment",
    [STORE_E_BUSY] = "the object is in use by another reader",
};

const char *store_strerror(store_status_t status) {
    if ((unsigned)status >= STORE_STATUS_COUNT || names[status] == 0) return "unknown status";
    return names[status];
}
