/* A fixed ring of recent events; the oldest gives way. */
#include "httpd/api_events.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct api_events {
    struct api_event *v;
    size_t cap, n, head; /* head: where the next event goes */
    uint64_t next_seq;
};

struct api_events *api_events_new(size_t cap)
{
    struct api_events *e = calloc(1, sizeof *e);
    if (!e || !(e->v = calloc(cap ? cap : 1, sizeof *e->v))) {
        free(e);
        return NULL;
    }
    e->cap = cap ? cap : 1;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    e->next_seq = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    return e;
}

static void clear_one(struct api_event *ev)
{
    free(ev->rcpt);
    free(ev->cred);
    free(ev->upstream);
    free(ev->reply);
    memset(ev, 0, sizeof *ev);
}

void api_events_free(struct api_events *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->cap; i++)
        clear_one(&e->v[i]);
    free(e->v);
    free(e);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void api_events_add(struct api_events *e, time_t at, const char *type, const char *id,
                    const char *rcpt, const char *cred, const char *upstream, const char *reply)
{
    struct api_event *ev = &e->v[e->head];
    clear_one(ev);
    ev->seq = ++e->next_seq;
    ev->at = at;
    strncpy(ev->type, type, sizeof ev->type - 1);
    strncpy(ev->id, id ? id : "", sizeof ev->id - 1);
    ev->rcpt = dup_or_null(rcpt);
    ev->cred = dup_or_null(cred);
    ev->upstream = dup_or_null(upstream);
    ev->reply = dup_or_null(reply);
    e->head = (e->head + 1) % e->cap;
    if (e->n < e->cap)
        e->n++;
}

uint64_t api_events_oldest(const struct api_events *e)
{
    if (!e->n)
        return 0;
    return e->v[(e->head + e->cap - e->n) % e->cap].seq;
}

uint64_t api_events_each(const struct api_events *e, uint64_t since, size_t limit, const char *cred,
                         const char *id, void (*fn)(void *arg, const struct api_event *ev),
                         void *arg)
{
    uint64_t last = since;
    size_t sent = 0;
    /* seqs grow along the ring: find the first above since by bisection */
    size_t lo = 0, hi = e->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (e->v[(e->head + e->cap - e->n + mid) % e->cap].seq <= since)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < e->n && sent < limit; i++) {
        const struct api_event *ev = &e->v[(e->head + e->cap - e->n + i) % e->cap];
        last = ev->seq; /* skipped events move the cursor too */
        if (cred && (!ev->cred || strcmp(cred, ev->cred) != 0))
            continue;
        if (id && strcmp(id, ev->id) != 0)
            continue;
        fn(arg, ev);
        sent++;
    }
    return last;
}
