/* Message buffers under the global in-flight budget (see msgbuf.h). The
 * charge is the allocated capacity, not the length, since that is what the
 * process holds. */
#include "intake/msgbuf.h"

#include <stdint.h>
#include <stdlib.h>

enum msgbuf_status msgbuf_reserve(struct msgbuf *b, size_t extra, long long *inflight,
                                  long long max)
{
    if (b->len + extra <= b->cap)
        return MSGBUF_OK;
    if (extra > SIZE_MAX / 2 - b->len)
        return MSGBUF_NOMEM;
    size_t cap = b->cap ? b->cap : MSGBUF_INITIAL;
    while (cap < b->len + extra)
        cap *= 2;
    long long growth = (long long)(cap - b->cap);
    if (*inflight + growth > max)
        return MSGBUF_OVER_BUDGET;
    char *p = realloc(b->p, cap);
    if (!p)
        return MSGBUF_NOMEM;
    b->p = p;
    b->cap = cap;
    *inflight += growth;
    return MSGBUF_OK;
}

void msgbuf_release(struct msgbuf *b, long long *inflight)
{
    *inflight -= (long long)b->cap;
    if (*inflight < 0)
        *inflight = 0;
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
