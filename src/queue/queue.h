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
void queue_flush(struct queue *q);     /* every active message due now */
void queue_retry_all(struct queue *q); /* flush + revive dead */

/* Releases messages held automatically because of upstream trouble (their
 * hold reason starts with "upstream"); operator holds stay. */
void queue_release_auto(struct queue *q);

/* Text that marks an automatic hold. */
#define QUEUE_AUTO_HOLD_PREFIX "upstream: "

/* Stops starting new attempts (shutdown); returns attempts still running. */
size_t queue_quiesce(struct queue *q);
size_t queue_inflight(const struct queue *q);

/* Delay before attempt number `attempts` (1-based): uniform in
 * [1, min(cap, base * 2^(attempts-1))], "full jitter". Exposed for tests. */
int64_t queue_backoff(int64_t base, int64_t cap, uint32_t attempts, uint64_t rnd);

#endif
