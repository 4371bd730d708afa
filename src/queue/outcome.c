/* The scheduler's decisions after a delivery attempt (outcome.h): pure
 * functions over the attempt's result, the message's age and attempt count,
 * the retry settings, the time and a random value. queue.c applies them. */
#include "queue/outcome.h"
#include "queue/queue.h"

#include <stdio.h>

int64_t queue_backoff(int64_t base, int64_t cap, uint32_t attempts, uint64_t rnd)
{
    int64_t d = base;
    for (uint32_t i = 1; i < attempts && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    if (d < 1)
        d = 1;
    return 1 + (int64_t)(rnd % (uint64_t)d);
}

void outcome_rcpts(struct deliver_result *res, uint32_t n_rcpts, int64_t age_s,
                   const char *last_reply, const struct outcome_params *p,
                   struct outcome_rcpts *out)
{
    *out = (struct outcome_rcpts){.final_reply = "none"};
    out->expired = age_s > p->max_lifetime;
    /* expiry turns remaining temporary failures into permanent ones, except
     * when the upstream itself is at fault: that never bounces */
    for (uint32_t i = 0; i < res->n_rcpts && i < n_rcpts; i++) {
        struct deliver_rcpt_result *rr = &res->rcpt[i];
        if (rr->cls == DELIVER_TEMP && out->expired && !res->upstream_fault) {
            rr->cls = DELIVER_PERM;
            snprintf(rr->reply, sizeof rr->reply,
                     "delivery time expired after %d s" QUEUE_LAST_REPLY_SEP "%.180s",
                     p->max_lifetime, last_reply ? last_reply : "none");
        }
    }
    for (uint32_t i = 0; i < res->n_rcpts && i < n_rcpts; i++) {
        if (res->rcpt[i].cls == DELIVER_PERM) {
            out->bounce = true;
            out->final_reply = res->rcpt[i].reply;
            out->failed++;
        } else if (res->rcpt[i].cls == DELIVER_OK) {
            out->delivered++;
        }
    }
}

const char *outcome_rcpt_status(const struct deliver_result *res, uint32_t i)
{
    const struct deliver_rcpt_result *rr = &res->rcpt[i];
    return rr->cls == DELIVER_SKIP   ? NULL
           : rr->cls == DELIVER_OK   ? "delivered"
           : rr->cls == DELIVER_PERM ? "failed"
           : res->hold               ? "held"
                                     : "deferred";
}

void outcome_next(const struct deliver_result *res, uint32_t pending, bool expired,
                  uint32_t attempts, int64_t now, uint64_t rnd, const struct outcome_params *p,
                  struct outcome_next *out)
{
    *out = (struct outcome_next){.upstream_wait = res->upstream_fault};
    if (pending == 0) {
        out->action = OUTCOME_DEAD;
    } else if (res->upstream_fault && (res->hold || expired)) {
        /* misconfigured upstreams (TLS, AUTH) hold mail until fixed; it is
         * released on SIGHUP or when a probe finds the upstream healthy */
        out->action = OUTCOME_HOLD;
    } else {
        out->action = OUTCOME_DEFER;
        out->delay_s = queue_backoff(p->retry_base, p->retry_cap, attempts + 1, rnd);
        out->next_attempt = now + out->delay_s;
        out->why = res->upstream_fault ? res->fault : NULL;
        for (uint32_t i = 0; !out->why && i < res->n_rcpts; i++)
            if (res->rcpt[i].cls == DELIVER_TEMP)
                out->why = res->rcpt[i].reply;
    }
}
