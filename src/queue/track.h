/* What the scheduler remembers about each message beyond the spool's record:
 * when it was received on the monotonic clock (for its lifetime), and whether
 * it waits because an upstream was down (for the release on recovery). An
 * open-addressing hash table keyed by message id. */
#ifndef SLUICE_QUEUE_TRACK_H
#define SLUICE_QUEUE_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    TRACK_UPSTREAM_WAIT = 1, /* last deferred or held because no upstream could take it */
    TRACK_RELEASE_QUEUED = 2 /* in the scheduler's recovery release list */
};

struct track_entry {
    uint64_t id; /* 0: free slot */
    int64_t born_ms;
    unsigned flags;
};

struct track {
    struct track_entry *v;
    size_t cap, n; /* cap is 0 or a power of two */
};

/* The entry for id, or NULL. */
struct track_entry *track_get(struct track *t, uint64_t id);

/* The entry for id, made with born_ms when new; NULL when out of memory. */
struct track_entry *track_put(struct track *t, uint64_t id, int64_t born_ms);

void track_del(struct track *t, uint64_t id);
void track_free(struct track *t);

#endif
