/* Which delivery failures are the upstream's trouble and which are the
 * message's (ARCHITECTURE.md invariant 3): upstream trouble fails over and
 * defers or holds, never bounces; a refusal of the message bounces. Also
 * the circuit breaker's arithmetic. Pure functions, no I/O. */
#ifndef SLUICE_DELIVER_TROUBLE_H
#define SLUICE_DELIVER_TROUBLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deliver/client.h"
#include "deliver/deliver.h"

/* TLS and AUTH failures are misconfiguration: mail waits (held) for a fix
 * instead of retrying on a schedule. */
bool trouble_is_misconfig(enum smtp_client_errcat cat);

/* A reply that refuses us rather than the message: authentication required
 * or failed (RFC 4954 6: 530, 534, 535, 538, 454; 5.7.0, 5.7.8, 5.7.9,
 * 5.7.11, 4.7.0). */
bool trouble_reply_refuses_us(const struct smtp_client_status *st);

/* True when a transaction's result is the upstream refusing us at MAIL,
 * RCPT or DATA: fail over, never bounce. */
bool trouble_refused_us(const struct smtp_client_result *res);

/* A recipient's class from its reply code: 2xx delivered, 5xx permanent,
 * anything else temporary. */
enum deliver_class trouble_rcpt_class(int code);

/* The upstream trouble an attempt met on its way down the failover chain. */
struct trouble {
    char fault[256];    /* "up1: reason; up2: reason" */
    bool all_misconfig; /* every upstream tried failed by misconfiguration */
    bool tried_any;     /* some upstream was tried (or could not be set up) */
};

void trouble_init(struct trouble *t);
/* Adds one upstream's failure to the fault text (clipped, never overflows). */
void trouble_note(struct trouble *t, const char *upstream, const char *reason, bool misconfig);
/* When no upstream took the message: hold it (true) rather than defer. */
bool trouble_hold(const struct trouble *t);

/* The circuit breaker's pause before the next probe after fails failures in
 * a row (fails >= 1): 1 s doubling, up to max_s, or retry_cap_s if smaller
 * and positive. */
int64_t trouble_probe_pause_ms(int fails, int64_t max_s, int retry_cap_s);

/* Whether a connection error counts against the upstream's health. A drop
 * after the final "." (outcome unknown) on a connection that had been ready
 * says nothing about the upstream: *ambiguous is set instead. */
bool trouble_health_failure(bool has_job, bool outcome_unknown, bool ever_ready, bool *ambiguous);

#endif
