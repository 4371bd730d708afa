/* One SMTP upstream at run time: its pool of client connections (reused
 * across messages), its rate limit, and its health as a circuit breaker:
 * after a connection-level failure it is "down" until a probe connection
 * succeeds, with growing pauses between probes. */
#ifndef SLUICE_DELIVER_UPSTREAM_H
#define SLUICE_DELIVER_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deliver/client.h"

struct relay;
struct config_upstream;
struct upstream;
struct upstream_job;

/* What a pool opens its connections with: the SMTP client of
 * deliver/client.h, unless a test installs a fake with
 * upstream_set_transport (NULL restores the client). Same contracts as the
 * smtp_client_* functions they stand for. */
struct upstream_transport {
    struct smtp_client *(*open)(struct event_base *base, struct evdns_base *dns,
                                const struct smtp_client_opts *opts,
                                const struct smtp_client_cb *cb, void *cb_arg);
    int (*send)(struct smtp_client *c, const struct smtp_client_msg *msg);
    void (*quit)(struct smtp_client *c);
    void (*free)(struct smtp_client *c);
    bool (*is_idle)(const struct smtp_client *c);
    unsigned long (*messages_sent)(const struct smtp_client *c);
};
void upstream_set_transport(const struct upstream_transport *t);

/* How a job ended on this upstream. */
struct upstream_outcome {
    /* The connection failed before the message's fate was known: the
     * upstream's fault. category says why (TLS, AUTH, CONNECT, ...). */
    bool conn_fault;
    enum smtp_client_errcat category;
    char reason[320];
    /* Set when !conn_fault: the upstream's replies. */
    const struct smtp_client_result *res;
};

struct upstream_job {
    struct smtp_client_msg msg;
    void (*done)(struct upstream_job *job, const struct upstream_outcome *o);
    /* private */
    struct upstream_job *next;
};

enum upstream_health { UPSTREAM_HEALTHY = 0, UPSTREAM_DOWN, UPSTREAM_PROBING };

/* Reads the secret (file or environment) and builds the TLS context.
 * Returns NULL with err set when the upstream cannot be used at all. */
struct upstream *upstream_new(struct relay *r, const struct config_upstream *cfg, char *err,
                              size_t errlen);

/* Stops taking jobs; queued jobs end with conn_fault ("reconfigured");
 * idle connections quit; the object frees itself when the last one ends. */
void upstream_retire(struct upstream *u);

/* At exit, after the event loop stopped: closes every connection at once and
 * frees u. Jobs still queued or running are dropped without their callbacks;
 * their owner frees them. */
void upstream_free(struct upstream *u);

/* True when a job may be given now: healthy, or down with a probe due. */
bool upstream_available(struct upstream *u);

/* Queues a job; its done callback runs later, exactly once. */
void upstream_submit(struct upstream *u, struct upstream_job *job);

const char *upstream_name(const struct upstream *u);
enum upstream_health upstream_health(const struct upstream *u);
const char *upstream_last_error(const struct upstream *u);
enum smtp_client_errcat upstream_last_category(const struct upstream *u);

/* Pool figures for status output: connections open, being opened, jobs waiting. */
void upstream_pool_stats(const struct upstream *u, int *conns, int *connecting, size_t *queued);

#endif
