/* The daemon's listeners of the event bus (core/events.h): each event goes
 * to the JSON log, the audit chain, the /metrics counters, per-credential
 * accounting (delivery side) and webhooks. Everything runs on the loop
 * thread; the audit and webhook modules do their own I/O off it. */
#include "cli/observe.h"

#include "core/events.h"

#include "core/audit.h"
#include "core/config.h"
#include "core/log.h"
#include "core/privacy.h"
#include "core/relay.h"
#include "deliver/deliver.h"
#include "http/metrics.h"
#include "http/webhook.h"
#include "policy/accounting.h"
#include "policy/policy.h"
#include "queue/queue.h"
#include "spool/spool.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_UPSTREAM_ROWS 64
#define MAX_CRED_ROWS 1024

struct outcome_row {
    char name[64];
    uint64_t delivered, deferred, failed;
};

struct events {
    struct audit *audit;
    struct privacy *privacy;
    struct webhook *webhook;
    uint64_t rejected[REJECT_REASON_COUNT];
    struct outcome_row ups[MAX_UPSTREAM_ROWS];
    size_t n_ups;
    struct outcome_row *creds;
    size_t n_creds;
    struct metrics_histogram latency;
    double start_time;
    bool spool_failing;
};

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

int observe_open(struct relay *r, char *err, size_t errlen)
{
    const struct config *cfg = r->cfg;
    struct events *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->start_time = now_s();
    metrics_histogram_init_latency(&e->latency);
    if (cfg->audit_file && *cfg->audit_file) {
        e->audit = audit_open(
            cfg->audit_file,
            cfg->audit_key_file && *cfg->audit_key_file ? cfg->audit_key_file : NULL, err, errlen);
        if (!e->audit)
            goto fail;
    }
    if (cfg->log_privacy) {
        e->privacy = privacy_open(cfg->log_privacy_key_file, false, err, errlen);
        if (!e->privacy)
            goto fail;
    }
    if (cfg->webhook_urls && *cfg->webhook_urls) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/webhooks", cfg->var_dir);
        e->webhook = webhook_open(
            cfg->webhook_urls,
            cfg->webhook_secret_file && *cfg->webhook_secret_file ? cfg->webhook_secret_file : NULL,
            dir, NULL, err, errlen);
        if (!e->webhook)
            goto fail;
    }
    r->events = e;
    return 0;
fail:
    audit_close(e->audit);
    privacy_free(e->privacy);
    free(e);
    return -1;
}

void observe_close(struct relay *r)
{
    struct events *e = r->events;
    if (!e)
        return;
    audit_close(e->audit);
    privacy_free(e->privacy);
    webhook_free(e->webhook);
    free(e->creds);
    free(e);
    r->events = NULL;
}

/* ---- helpers ---- */

static void audit(struct relay *r, const char *event, json_t *fields)
{
    if (r->events && r->events->audit)
        audit_append(r->events->audit, event, fields);
    else
        json_decref(fields);
}

static void pseudonym(struct relay *r, const char *addr, char *out, size_t len)
{
    if (r->events && r->events->privacy &&
        privacy_pseudonym(r->events->privacy, addr, out, len) == 0)
        return;
    snprintf(out, len, "%s", addr);
}

static struct outcome_row *row(struct outcome_row *rows, size_t *n, size_t max, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(rows[i].name, name) == 0)
            return &rows[i];
    if (*n >= max)
        return NULL;
    struct outcome_row *x = &rows[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    return x;
}

static const char *message_cred(const struct spool_msg *m, char *buf, size_t len)
{
    spool_meta_get(m->meta, "auth", buf, len);
    return buf;
}

/* ---- events ---- */

static void on_auth(struct relay *r, const char *client_ip, const char *method, const char *cred,
                    bool ok, const char *reason)
{
    if (!ok)
        r->n.auth_failures++;
    log_event(ok ? LOG_INFO : LOG_WARN, ok ? "auth.success" : "auth.failure", "client_ip", "%s",
              client_ip, "method", "%s", method, "credential", "%s", cred ? cred : "", "reason",
              "%s", reason ? reason : "", NULL);
    audit(r, ok ? "auth.success" : "auth.failure",
          json_pack("{s:s,s:s,s:s,s:s}", "client_ip", client_ip, "method", method, "credential",
                    cred ? cred : "", "reason", reason ? reason : ""));
}

static void on_reject(struct relay *r, const char *client_ip, const char *cred,
                      enum reject_reason why, const char *reply)
{
    r->n.rejected++;
    if (r->events && why < REJECT_REASON_COUNT)
        r->events->rejected[why]++;
    if (why == REJECT_SMUGGLING)
        r->n.smuggling_attempts++;
    if (r->events)
        r->events->spool_failing = why == REJECT_STORAGE;
    log_event(LOG_INFO, "smtp.rejected", "client_ip", "%s", client_ip, "credential", "%s",
              cred ? cred : "", "reason", "%s", reject_reason_name(why), "reply", "%s", reply,
              NULL);
    /* policy decisions are security events; storage trouble is not */
    if (why != REJECT_STORAGE && why != REJECT_SIGNING)
        audit(r, "policy.rejected",
              json_pack("{s:s,s:s,s:s,s:s}", "client_ip", client_ip, "credential", cred ? cred : "",
                        "reason", reject_reason_name(why), "reply", reply));
}

static void on_security(struct relay *r, const char *client_ip, const char *what,
                        const char *detail)
{
    if (strcmp(what, "tls_failure") == 0)
        r->n.tls_failures++;
    char name[96];
    snprintf(name, sizeof name, "security.%s", what);
    log_event(LOG_WARN, name, "client_ip", "%s", client_ip, "detail", "%s", detail ? detail : "",
              NULL);
    audit(r, name, json_pack("{s:s,s:s}", "client_ip", client_ip, "detail", detail ? detail : ""));
}

static void on_accepted(struct relay *r, const char *queue_id, const char *message_id,
                        const char *client_ip, const char *cred, const char *sender,
                        const char *const *rcpts, size_t n_rcpts, size_t size, const char *tls,
                        const char *const *attachments, size_t n_attachments)
{
    r->n.accepted++;
    r->n.bytes_accepted += size;
    if (r->events)
        r->events->spool_failing = false;
    /* recipients as one comma list, pseudonymised when privacy is on */
    char list[2048] = "";
    size_t used = 0;
    for (size_t i = 0; i < n_rcpts && used < sizeof list - 80; i++) {
        char p[320];
        pseudonym(r, rcpts[i], p, sizeof p);
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? "," : "", p);
    }
    char att[1024] = "";
    used = 0;
    for (size_t i = 0; i < n_attachments && used < sizeof att - 80; i++)
        used +=
            (size_t)snprintf(att + used, sizeof att - used, "%s%s", i ? "," : "", attachments[i]);
    log_event(LOG_INFO, "smtp.accepted", "id", "%s", queue_id, "message_id", "%s", message_id,
              "client_ip", "%s", client_ip, "credential", "%s", cred ? cred : "", "sender", "%s",
              sender, "recipients", "%s", list, "rcpt_count", "#%zu", n_rcpts, "size", "#%zu", size,
              "tls", "%s", tls ? tls : "", "attachments", "%s", att, NULL);
}

static void on_delivery(struct relay *r, const struct spool_msg *m, uint32_t rcpt,
                        const char *state, const char *upstream, const char *reply,
                        double duration_s)
{
    struct events *e = r->events;
    char ids[17], cred[128], who[320];
    spool_id_str(m->id, ids);
    message_cred(m, cred, sizeof cred);
    pseudonym(r, rcpt < m->n_rcpts ? m->rcpts[rcpt] : "", who, sizeof who);
    enum acct_event ev = ACCT_DEFERRED;
    bool delivered = strcmp(state, "delivered") == 0;
    bool failed = strcmp(state, "failed") == 0;
    if (delivered)
        ev = ACCT_DELIVERED;
    else if (failed)
        ev = ACCT_BOUNCED;
    if (e) {
        struct outcome_row *u =
            upstream && *upstream ? row(e->ups, &e->n_ups, MAX_UPSTREAM_ROWS, upstream) : NULL;
        if (!e->creds)
            e->creds = calloc(MAX_CRED_ROWS, sizeof *e->creds);
        struct outcome_row *c =
            *cred && e->creds ? row(e->creds, &e->n_creds, MAX_CRED_ROWS, cred) : NULL;
        for (int k = 0; k < 2; k++) {
            struct outcome_row *x = k ? c : u;
            if (!x)
                continue;
            if (delivered)
                x->delivered++;
            else if (failed)
                x->failed++;
            else
                x->deferred++;
        }
        if (delivered)
            metrics_histogram_observe(&e->latency, (double)time(NULL) - (double)m->received);
    }
    if (r->accounting && *cred && strcmp(state, "held") != 0)
        accounting_add(r->accounting, cred, ev, failed ? reply : NULL,
                       delivered ? (long long)m->data_len : 0);
    log_event(delivered ? LOG_INFO : LOG_WARN, "delivery", "id", "%s", ids, "recipient", "%s", who,
              "state", "%s", state, "upstream", "%s", upstream ? upstream : "", "reply", "%s",
              reply ? reply : "", "credential", "%s", cred, "attempt", "#%u", m->attempts + 1,
              "duration_ms", "#%.0f", duration_s * 1000.0, NULL);
    if (e && e->webhook) {
        json_t *o =
            json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "event", state, "queue_id", ids, "recipient",
                      who, "upstream", upstream ? upstream : "", "reply", reply ? reply : "",
                      "credential", cred, "received", (json_int_t)m->received);
        char mid[256];
        if (spool_meta_get(m->meta, "message_id", mid, sizeof mid) == 0)
            json_object_set_new(o, "message_id", json_string(mid));
        webhook_emit(e->webhook, o);
    }
}

static void on_admin(struct relay *r, const char *action, const char *detail)
{
    log_event(LOG_INFO, "admin", "action", "%s", action, "detail", "%s", detail ? detail : "",
              NULL);
    audit(r, action, json_pack("{s:s}", "detail", detail ? detail : ""));
}

/* ---- /metrics ---- */

static void health_one(void *arg, const char *name, const char *health, const char *last_error,
                       int conns, size_t queued)
{
    (void)last_error;
    (void)conns;
    (void)queued;
    metrics_snapshot_add_health(arg, name,
                                strcmp(health, "healthy") == 0 || strcmp(health, "capture") == 0);
}

struct depth {
    uint64_t ready, deferred;
    int64_t now;
};

static void depth_one(void *arg, const struct spool_msg *m)
{
    struct depth *d = arg;
    if (m->state != SPOOL_MSG_ACTIVE)
        return;
    if (m->attempts == 0 || m->next_attempt <= d->now)
        d->ready++;
    else
        d->deferred++;
}

void observe_fill_metrics(struct relay *r, struct metrics_snapshot *s)
{
    struct events *e = r->events;
    s->start_time = e ? e->start_time : 0;
    s->connections = r->n.connections;
    s->sessions = r->sessions;
    s->accepted = r->n.accepted;
    s->bytes_accepted = r->n.bytes_accepted;
    s->bounces = r->n.bounces;
    s->tls_handshake_failures = r->n.tls_failures;
    s->auth_failures = r->n.auth_failures;
    s->smuggling_attempts = r->n.smuggling_attempts;
    struct policy_auth_stats as;
    policy_auth_stats(r, &as);
    s->auth.cache_hits = as.cache_hits;
    s->auth.cache_misses = as.cache_misses;
    s->auth.cache_evictions = as.cache_evictions;
    s->auth.cache_entries = as.cache_entries;
    s->auth.argon2_verifications = as.argon2_verifications;
    s->auth.hmac_key_verifications = as.hmac_key_verifications;
    if (e) {
        for (int i = 0; i < REJECT_REASON_COUNT; i++)
            metrics_snapshot_add_rejected(s, reject_reason_name((enum reject_reason)i),
                                          e->rejected[i]);
        for (size_t i = 0; i < e->n_ups; i++)
            metrics_snapshot_add_upstream(s, e->ups[i].name, e->ups[i].delivered,
                                          e->ups[i].deferred, e->ups[i].failed);
        for (size_t i = 0; i < e->n_creds; i++)
            metrics_snapshot_add_credential(s, e->creds[i].name, e->creds[i].delivered,
                                            e->creds[i].deferred, e->creds[i].failed);
        s->latency = e->latency;
        s->webhook_pending = e->webhook ? webhook_pending(e->webhook) : 0;
    }
    struct spool_stats st;
    spool_get_stats(r->spool, &st);
    struct depth d = {.now = (int64_t)time(NULL)};
    spool_foreach(r->spool, depth_one, &d);
    s->queue.ready = d.ready;
    s->queue.deferred = d.deferred;
    s->queue.held = st.held;
    s->queue.dead = st.dead;
    s->queue.inflight = queue_inflight(r->queue);
    s->oldest_message_age =
        st.messages && st.oldest_received ? (double)(time(NULL) - st.oldest_received) : 0;
    s->spool_writable =
        !(e && e->spool_failing) && st.unrecorded == 0 && access(r->cfg->spool_dir, W_OK) == 0;
    s->accepting = r->listeners && !r->draining;
    /* Full: no room for one more message of the largest size accepted. */
    struct statvfs vfs;
    s->spool_space_known = statvfs(r->cfg->spool_dir, &vfs) == 0;
    if (s->spool_space_known)
        s->spool_free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    s->spool_min_free = (uint64_t)r->cfg->max_message_size;
    s->spool.damaged_ranges = st.damaged_ranges;
    s->spool.damaged_bytes = st.damaged_bytes;
    s->spool.compaction_bytes = st.compact_bytes;
    s->spool.compaction_turns = st.compact_turns;
    s->spool.unrecorded = st.unrecorded;
    s->spool.append_failures = st.append_failures;
    deliver_foreach_upstream(r->deliver, health_one, s);
}

const struct events_observer observe_listeners = {
    .auth = on_auth,
    .reject = on_reject,
    .security = on_security,
    .accepted = on_accepted,
    .delivery = on_delivery,
    .admin = on_admin,
};
