/* The scheduler's clocks. Retry times and message ages run on the monotonic
 * clock, so a step of the wall clock neither postpones retries nor ages
 * mail; the spool keeps wall-clock seconds, converted here on the way in. */
#ifndef SLUICE_QUEUE_CLOCK_H
#define SLUICE_QUEUE_CLOCK_H

#include <stdint.h>

/* Both clocks read at one moment. */
struct qclock {
    int64_t wall_s;  /* unix seconds */
    int64_t mono_ms; /* CLOCK_MONOTONIC, milliseconds */
};

/* Differences below this are reading jitter (the wall clock is read in whole
 * seconds), not a step. */
#define QCLOCK_STEP_MIN_S 2

void qclock_read(struct qclock *c);

/* The monotonic time at which wall-clock time `wall_when` comes, as seen at
 * `now`; a time already past is due now. */
int64_t qclock_due_ms(const struct qclock *now, int64_t wall_when);

/* The monotonic time of wall-clock instant `wall_then` (in the past),
 * as seen at `now`: used for a message's receipt time. A time in the future
 * (a clock that went back since) counts as now. */
int64_t qclock_since_ms(const struct qclock *now, int64_t wall_then);

/* How far the wall clock moved beyond (or behind) the monotonic clock
 * between two readings, in seconds; 0 when within QCLOCK_STEP_MIN_S. */
int64_t qclock_step(const struct qclock *prev, const struct qclock *now);

#endif
