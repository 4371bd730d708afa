/* The scheduler: decides when each spooled message is attempted, limits how
 * many attempts run at once, applies exponential backoff with full jitter and
 * the maximum queue lifetime, and records every outcome in the spool before
 * acting on it. */
#ifndef SLUICE_QUEUE_QUEUE_H
#define SLUICE_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct queue;

struct queue *queue_new(struct relay *r);
void queue_free(struct queue *q);

/* Schedules every active message found in the spool (after recovery). */
void queue_load(struct queue *q);

/* A newly accepted, durable message: attempt it now. */
void queue_add(struct queue *q, uint64_t id);

/* Operator controls. Return 0, or -ENOENT / -EINVAL. */
int queue_retry(struct queue *q, uint64_t id); /* due now; revives dead/held */
int queue_hold(struct queue *q, uint64_t id);
int queue_release(struct queue *q, uint64_t id);
int queue_delete(struct queue *q, uint64_t id);
void queue_flush(struct queue *q); /* every active message due now */
/* Active and held messages due now, dead letters too when dead_too; returns
 * how many were revived. */
size_t queue_retry_all(struct queue *q, bool dead_too);
size_t queue_release_all(struct queue *q); /* every held message due now */

/* Releases messages held automatically because of upstream trouble (their
 * hold reason starts with "upstream"); operator holds stay. */
void queue_release_auto(struct queue *q);

/* An upstream became healthy again: releases automatic holds and attempts
 * mail deferred because no upstream could take it, without waiting for its
 * retry time. Both go through a paced list that only uses capacity new and
 * due mail leave free. */
void queue_upstream_recovered(struct queue *q);

/* Text that marks an automatic hold. */
#define QUEUE_AUTO_HOLD_PREFIX "upstream: "

/* Outcome texts that replace the upstream's reply (dead, expired, held by
 * an operator) carry it after this separator. */
#define QUEUE_LAST_REPLY_SEP "; last reply: "

/* The upstream's last reply within a message's last_reply text (points into
 * it), or NULL when there is none. */
const char *queue_upstream_reply(const char *last_reply);

/* Stops starting new attempts (shutdown); returns attempts still running. */
size_t queue_quiesce(struct queue *q);
size_t queue_inflight(const struct queue *q);

/* Delay before attempt number `attempts` (1-based): uniform in
 * [1, min(cap, base * 2^(attempts-1))], "full jitter". Exposed for tests. */
int64_t queue_backoff(int64_t base, int64_t cap, uint32_t attempts, uint64_t rnd);

#endif
