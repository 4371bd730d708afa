/* Upstream trouble versus a refused message, and the breaker's pauses
 * (trouble.h). deliver.c and upstream.c act on these answers. */
#include "deliver/trouble.h"

#include <stdio.h>
#include <string.h>

bool trouble_is_misconfig(enum smtp_client_errcat cat)
{
    return cat == SMTP_CLIENT_ERR_TLS || cat == SMTP_CLIENT_ERR_AUTH;
}

bool trouble_reply_refuses_us(const struct smtp_client_status *st)
{
    if (st->code == 530 || st->code == 534 || st->code == 535 || st->code == 538 || st->code == 454)
        return true;
    return strcmp(st->enhanced, "5.7.0") == 0 || strcmp(st->enhanced, "5.7.8") == 0 ||
           strcmp(st->enhanced, "5.7.9") == 0 || strcmp(st->enhanced, "5.7.11") == 0 ||
           strcmp(st->enhanced, "4.7.0") == 0;
}

bool trouble_refused_us(const struct smtp_client_result *res)
{
    return (res->stage == SMTP_CLIENT_STAGE_MAIL || res->stage == SMTP_CLIENT_STAGE_RCPT ||
            res->stage == SMTP_CLIENT_STAGE_DATA) &&
           trouble_reply_refuses_us(&res->status);
}

enum deliver_class trouble_rcpt_class(int code)
{
    return code >= 200 && code < 300   ? DELIVER_OK
           : code >= 500 && code < 600 ? DELIVER_PERM
                                       : DELIVER_TEMP;
}

void trouble_init(struct trouble *t)
{
    t->fault[0] = 0;
    t->all_misconfig = true;
    t->tried_any = false;
}

void trouble_note(struct trouble *t, const char *upstream, const char *reason, bool misconfig)
{
    if (!misconfig)
        t->all_misconfig = false;
    size_t used = strlen(t->fault);
    if (used < sizeof t->fault - 8)
        snprintf(t->fault + used, sizeof t->fault - used, "%s%.60s: %.180s", used ? "; " : "",
                 upstream, reason);
}

bool trouble_hold(const struct trouble *t)
{
    return t->tried_any && t->all_misconfig;
}

int64_t trouble_probe_pause_ms(int fails, int64_t max_s, int retry_cap_s)
{
    int64_t cap = max_s * 1000;
    if (retry_cap_s > 0 && (int64_t)retry_cap_s * 1000 < cap)
        cap = (int64_t)retry_cap_s * 1000;
    int64_t pause = 1000;
    for (int i = 1; i < fails && pause < cap; i++)
        pause *= 2;
    if (pause > cap)
        pause = cap;
    return pause;
}

bool trouble_health_failure(bool has_job, bool outcome_unknown, bool ever_ready, bool *ambiguous)
{
    *ambiguous = has_job && outcome_unknown && ever_ready;
    return !ever_ready || (has_job && !*ambiguous);
}
