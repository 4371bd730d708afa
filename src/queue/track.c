/* Linear probing with backward-shift deletion: no tombstones, so lookups stay
 * short however many messages come and go. */
#include "queue/track.h"

#include <stdlib.h>

static size_t slot_of(const struct track *t, uint64_t id)
{
    /* ids are mostly sequential: mix them before masking */
    uint64_t h = id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (t->cap - 1);
}

struct track_entry *track_get(struct track *t, uint64_t id)
{
    if (!t->cap || !id)
        return NULL;
    for (size_t i = slot_of(t, id);; i = (i + 1) & (t->cap - 1)) {
        if (t->v[i].id == id)
            return &t->v[i];
        if (!t->v[i].id)
            return NULL;
    }
}

static int grow(struct track *t)
{
    size_t nc = t->cap ? t->cap * 2 : 1024;
    struct track_entry *nv = calloc(nc, sizeof *nv);
    if (!nv)
        return -1;
    struct track old = *t;
    t->v = nv;
    t->cap = nc;
    for (size_t i = 0; i < old.cap; i++)
        if (old.v[i].id) {
            size_t j = slot_of(t, old.v[i].id);
            while (t->v[j].id)
                j = (j + 1) & (t->cap - 1);
            t->v[j] = old.v[i];
        }
    free(old.v);
    return 0;
}

struct track_entry *track_put(struct track *t, uint64_t id, int64_t born_ms)
{
    if (!id)
        return NULL;
    struct track_entry *e = track_get(t, id);
    if (e)
        return e;
    if ((t->n + 1) * 4 > t->cap * 3 && grow(t) < 0) /* load factor at most 3/4 */
        return NULL;
    size_t i = slot_of(t, id);
    while (t->v[i].id)
        i = (i + 1) & (t->cap - 1);
    t->v[i] = (struct track_entry){id, born_ms, 0};
    t->n++;
    return &t->v[i];
}

void track_del(struct track *t, uint64_t id)
{
    struct track_entry *e = track_get(t, id);
    if (!e)
        return;
    size_t mask = t->cap - 1, hole = (size_t)(e - t->v);
    t->v[hole].id = 0;
    t->n--;
    /* move later entries of the run back so no lookup stops early */
    for (size_t i = (hole + 1) & mask; t->v[i].id; i = (i + 1) & mask) {
        size_t home = slot_of(t, t->v[i].id);
        /* the entry may move into the hole unless its home lies in (hole, i] */
        bool stays = hole < i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            t->v[hole] = t->v[i];
            t->v[i].id = 0;
            hole = i;
        }
    }
}

void track_free(struct track *t)
{
    free(t->v);
    *t = (struct track){0};
}
