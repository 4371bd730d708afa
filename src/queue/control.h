/* The control socket: a Unix socket (mode 0600) through which `sluice queue`
 * talks to the running daemon. One request line in, one JSON document out. */
#ifndef SLUICE_QUEUE_CONTROL_H
#define SLUICE_QUEUE_CONTROL_H

#include <stddef.h>

struct relay;
struct control;

struct control *control_open(struct relay *r, char *err, size_t errlen);
void control_stop(struct control *c); /* stops accepting */
void control_free(struct control *c);

/* Answers one request line; returns a malloc'ed JSON text. Exposed for tests. */
char *control_handle(struct relay *r, const char *line);

#endif
