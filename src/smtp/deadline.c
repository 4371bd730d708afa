/* Which deadline a session faces next (see deadline.h). The content
 * allowance follows the rule "data_timeout plus one second per data_min_rate
 * octets received": a client keeping up the rate is never cut off however
 * large its message, and a trickle runs out after about data_timeout. */
#include "smtp/deadline.h"

#include "core/config.h"

static void earliest(int64_t when, enum deadline_kind k, int64_t *due, enum deadline_kind *kind)
{
    if (when < *due) {
        *due = when;
        *kind = k;
    }
}

int64_t deadline_due(const struct config *cfg, enum deadline_phase phase,
                     const struct deadline_clock *c, enum deadline_kind *kind)
{
    int64_t due = INT64_MAX;
    *kind = DEADLINE_NONE;
    if (phase == DEADLINE_PAUSED)
        return due;
    if (c->txn_ms)
        earliest(c->txn_ms + (int64_t)cfg->transaction_deadline * 1000, DEADLINE_TRANSACTION, &due,
                 kind);
    if (phase == DEADLINE_COMMAND)
        earliest(c->line_ms + (int64_t)cfg->command_deadline * 1000, DEADLINE_LINE, &due, kind);
    if (phase == DEADLINE_CONTENT && cfg->data_min_rate > 0) {
        uint64_t earned_ms = c->content_bytes * 1000 / (uint64_t)cfg->data_min_rate;
        if (earned_ms > (uint64_t)INT64_MAX / 2)
            earned_ms = (uint64_t)INT64_MAX / 2;
        earliest(c->content_ms + (int64_t)cfg->data_timeout * 1000 + (int64_t)earned_ms,
                 DEADLINE_RATE, &due, kind);
    }
    return due;
}

const char *deadline_kind_name(enum deadline_kind kind)
{
    switch (kind) {
    case DEADLINE_LINE:
        return "command line";
    case DEADLINE_TRANSACTION:
        return "transaction";
    case DEADLINE_RATE:
        return "minimum data rate";
    default:
        return "none";
    }
}
