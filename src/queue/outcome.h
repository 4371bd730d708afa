/* What the scheduler decides after a delivery attempt, as pure functions:
 * each recipient's new state (delivered, failed with a DSN due, or retried),
 * lifetime expiry, and what happens to a message still pending (deferred to
 * a due time by backoff with full jitter, held for a misconfigured upstream,
 * or dead). queue.c applies the decisions to the spool. No I/O, no clock,
 * no randomness of their own: the caller passes now and a random value. */
#ifndef SLUICE_QUEUE_OUTCOME_H
#define SLUICE_QUEUE_OUTCOME_H

#include <stdbool.h>
#include <stdint.h>

#include "deliver/deliver.h"

struct outcome_params {
    int max_lifetime; /* seconds a message may wait (config queue.max_lifetime) */
    int retry_base;   /* first backoff window, seconds */
    int retry_cap;    /* largest backoff window, seconds */
};

/* The recipients' part of an attempt's outcome. */
struct outcome_rcpts {
    bool expired;            /* older than max_lifetime */
    bool bounce;             /* a recipient failed permanently: a DSN is due */
    const char *final_reply; /* the last permanent reply (in res), or "none" */
    uint32_t delivered;      /* recipients to mark delivered */
    uint32_t failed;         /* recipients to mark failed */
};

/* Decides each recipient's state. Expiry turns a temporary failure into a
 * permanent one, rewriting its class and reply in res, unless the upstream
 * itself was at fault (that never bounces). age_s is the message's age on
 * the monotonic clock; last_reply the message's previous reply (NULL: none). */
void outcome_rcpts(struct deliver_result *res, uint32_t n_rcpts, int64_t age_s,
                   const char *last_reply, const struct outcome_params *p,
                   struct outcome_rcpts *out);

/* The event status of recipient i after outcome_rcpts(): "delivered",
 * "failed", "held", "deferred", or NULL for a recipient not attempted. */
const char *outcome_rcpt_status(const struct deliver_result *res, uint32_t i);

enum outcome_action {
    OUTCOME_DEAD,  /* nothing pending and not every recipient delivered */
    OUTCOME_HOLD,  /* upstream misconfigured (or expired while it was at fault) */
    OUTCOME_DEFER, /* try again at next_attempt */
};

struct outcome_next {
    enum outcome_action action;
    bool upstream_wait;   /* wait for an upstream to recover (release list) */
    int64_t delay_s;      /* DEFER: seconds from now */
    int64_t next_attempt; /* DEFER: now + delay_s, wall-clock, what the spool keeps */
    const char *why;      /* DEFER: the upstream fault or first temporary reply (in res), or NULL */
};

/* Decides what happens to a message still in the spool after its marks:
 * pending is the number of recipients still pending, attempts the attempts
 * before this one, now the wall-clock time in seconds and rnd a uniformly
 * random value for the jitter. */
void outcome_next(const struct deliver_result *res, uint32_t pending, bool expired,
                  uint32_t attempts, int64_t now, uint64_t rnd, const struct outcome_params *p,
                  struct outcome_next *out);

#endif
