/* Delivery attempts: picks the upstream for a message (priority order,
 * skipping unhealthy ones), runs the attempt (capture or SMTP) and reports a
 * per-recipient outcome. Upstream trouble is reported as such, so the queue
 * defers instead of bouncing. */
#ifndef SLUICE_DELIVER_DELIVER_H
#define SLUICE_DELIVER_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct deliver;
struct spool_msg;

enum deliver_class { DELIVER_OK = 0, DELIVER_TEMP, DELIVER_PERM, DELIVER_SKIP };

struct deliver_rcpt_result {
    enum deliver_class cls;
    char reply[256]; /* the upstream's reply, or our explanation */
};

struct deliver_result {
    uint32_t n_rcpts;                 /* same as the message's */
    struct deliver_rcpt_result *rcpt; /* SKIP for recipients not attempted */
    bool upstream_fault;              /* no upstream could take it: defer/hold, never bounce */
    bool hold;                        /* ... because upstreams are misconfigured (TLS, AUTH) */
    char upstream[64];                /* name of the upstream used */
    char fault[256];                  /* why, when upstream_fault */
};

typedef void (*deliver_done_fn)(void *arg, uint64_t id, struct deliver_result *res);

struct deliver *deliver_new(struct relay *r, char *err, unsigned long errlen);
void deliver_free(struct deliver *d);

/* Re-reads upstream settings after SIGHUP. */
int deliver_reload(struct deliver *d, char *err, unsigned long errlen);

/* Starts an attempt for the message's pending recipients. done runs exactly
 * once, later, on the loop thread; res is valid only during the call. */
int deliver_start(struct deliver *d, const struct spool_msg *m, deliver_done_fn done, void *arg);

/* Calls fn for each configured upstream, in priority order; health is
 * "healthy", "down", "probing", "capture" or "unusable" (setup failed). */
void deliver_foreach_upstream(struct deliver *d,
                              void (*fn)(void *arg, const char *name, const char *health,
                                         const char *last_error, int conns, size_t queued),
                              void *arg);

#endif
