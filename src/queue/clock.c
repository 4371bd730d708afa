/* Conversions between the spool's wall-clock seconds and the scheduler's
 * monotonic milliseconds, and detection of wall-clock steps. */
#include "queue/clock.h"

#include <time.h>

void qclock_read(struct qclock *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    c->mono_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    c->wall_s = (int64_t)time(NULL);
}

int64_t qclock_due_ms(const struct qclock *now, int64_t wall_when)
{
    int64_t ahead = wall_when - now->wall_s;
    return ahead > 0 ? now->mono_ms + ahead * 1000 : now->mono_ms;
}

int64_t qclock_since_ms(const struct qclock *now, int64_t wall_then)
{
    int64_t ago = now->wall_s - wall_then;
    return ago > 0 ? now->mono_ms - ago * 1000 : now->mono_ms;
}

int64_t qclock_step(const struct qclock *prev, const struct qclock *now)
{
    int64_t wall = now->wall_s - prev->wall_s;
    int64_t mono = now->mono_ms - prev->mono_ms;
    /* whole seconds against milliseconds: compare in milliseconds */
    int64_t diff_ms = wall * 1000 - mono;
    if (diff_ms < QCLOCK_STEP_MIN_S * 1000 && diff_ms > -QCLOCK_STEP_MIN_S * 1000)
        return 0;
    return diff_ms / 1000;
}
