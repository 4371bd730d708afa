/* The buffer a message is received into, and the one budget all of them
 * share: a client may declare 25 MiB and a thousand clients may do so at
 * once, so growth is charged against a global in-flight limit and refused
 * past it, instead of letting memory follow what clients ask for. */
#ifndef SLUICE_INTAKE_MSGBUF_H
#define SLUICE_INTAKE_MSGBUF_H

#include <stdbool.h>
#include <stddef.h>

struct msgbuf {
    char *p;
    size_t len, cap; /* cap is what is charged to the budget */
};

#define MSGBUF_INITIAL 16384

enum msgbuf_status { MSGBUF_OK = 0, MSGBUF_NOMEM = -1, MSGBUF_OVER_BUDGET = -2 };

/* Makes room for `extra` more octets after len, doubling the capacity and
 * adding the growth to *inflight (octets held by every buffer together),
 * which may not pass max. On failure nothing changes. */
enum msgbuf_status msgbuf_reserve(struct msgbuf *b, size_t extra, long long *inflight,
                                  long long max);

/* Frees the buffer and takes its capacity off *inflight. */
void msgbuf_release(struct msgbuf *b, long long *inflight);

#endif
