/* SMTP upstream pool and circuit breaker. Jobs wait in a FIFO; idle ready
 * connections take them; new connections open while jobs wait and the pool
 * has room. A failure before a connection became ready (refused, TLS, AUTH)
 * or in the middle of a transaction marks the upstream down; probes with
 * growing pauses find out when it is back. */
#include "deliver/upstream.h"
#include "deliver/trouble.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/secrets.h"
#include "net/tls_client.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDLE_CLOSE_SECONDS 15
#define PROBE_MAX_SECONDS 60

struct conn {
    struct upstream *u;
    struct smtp_client *c;
    bool ready, ever_ready, probe;
    struct upstream_job *job;
    struct conn *next;
};

struct upstream {
    struct relay *r;
    char name[64];
    char *host, *ca_file, *server_name, *pin, *username, *helo;
    char *secret;
    struct smtp_client_opts opts;
    struct tls_client_ctx *tls;
    int max_conns, msgs_per_conn;
    double rate, tokens;
    int64_t last_refill_ms;
    struct conn *conns;
    int n_conns, n_connecting;
    struct upstream_job *q_head, *q_tail;
    size_t q_len;
    enum upstream_health health;
    int fails;
    int64_t retry_at_ms;
    char last_error[320];
    enum smtp_client_errcat last_category;
    bool retired;
    struct event *pump_timer, *probe_timer, *idle_timer;
};

static const struct upstream_transport smtp_transport = {
    .open = smtp_client_new,
    .send = smtp_client_send,
    .quit = smtp_client_quit,
    .free = smtp_client_free,
    .is_idle = smtp_client_is_idle,
    .messages_sent = smtp_client_messages_sent,
};
static const struct upstream_transport *tr = &smtp_transport;

void upstream_set_transport(const struct upstream_transport *t)
{
    tr = t ? t : &smtp_transport;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *upstream_name(const struct upstream *u)
{
    return u->name;
}

enum upstream_health upstream_health(const struct upstream *u)
{
    return u->health;
}

const char *upstream_last_error(const struct upstream *u)
{
    return u->last_error;
}

enum smtp_client_errcat upstream_last_category(const struct upstream *u)
{
    return u->last_category;
}

void upstream_pool_stats(const struct upstream *u, int *conns, int *connecting, size_t *queued)
{
    *conns = u->n_conns;
    *connecting = u->n_connecting;
    *queued = u->q_len;
}

static void pump(struct upstream *u);
static void maybe_free(struct upstream *u);
static void upstream_destroy(struct upstream *u);

/* ---- health ---- */

static void arm_timer(struct event *ev, int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(ev, &tv);
}

static void mark_down(struct upstream *u, const char *reason)
{
    snprintf(u->last_error, sizeof u->last_error, "%s", reason);
    bool was_up = u->health == UPSTREAM_HEALTHY;
    /* connections opened before the breaker tripped fail one after another;
     * they are the same outage, not a longer one: the next probe stays put */
    bool same_outage = u->health == UPSTREAM_DOWN && now_ms() < u->retry_at_ms;
    u->health = UPSTREAM_DOWN;
    if (same_outage)
        return;
    u->fails++;
    /* each failed probe doubles the pause, up to PROBE_MAX_SECONDS (or
     * retry_cap if smaller): there is no point in a probe after the retry */
    int64_t pause = trouble_probe_pause_ms(u->fails, PROBE_MAX_SECONDS, u->r->cfg->retry_cap);
    u->retry_at_ms = now_ms() + pause;
    if (was_up) {
        u->r->n.upstream_unhealthy++;
        log_event(LOG_WARN, "upstream_unhealthy", "upstream", "%s", u->name, "reason", "%s", reason,
                  NULL);
    }
    if (!u->retired)
        arm_timer(u->probe_timer, pause);
}

static void mark_healthy(struct upstream *u)
{
    if (u->health == UPSTREAM_HEALTHY)
        return;
    u->health = UPSTREAM_HEALTHY;
    u->fails = 0;
    u->last_error[0] = 0;
    event_del(u->probe_timer);
    log_event(LOG_INFO, "upstream_healthy", "upstream", "%s", u->name, NULL);
    /* mail held or deferred because of upstream trouble gets another chance */
    if (u->r->hooks.upstream_recovered)
        u->r->hooks.upstream_recovered(u->r);
}

bool upstream_available(struct upstream *u)
{
    if (u->retired)
        return false;
    if (u->health == UPSTREAM_HEALTHY)
        return true;
    if (u->health == UPSTREAM_DOWN && now_ms() >= u->retry_at_ms) {
        u->health = UPSTREAM_PROBING; /* this job is the probe */
        return true;
    }
    return false;
}

/* ---- jobs ---- */

static struct upstream_job *pop_job(struct upstream *u)
{
    struct upstream_job *j = u->q_head;
    if (j) {
        u->q_head = j->next;
        if (!u->q_head)
            u->q_tail = NULL;
        u->q_len--;
        j->next = NULL;
    }
    return j;
}

static void fail_job(struct upstream_job *j, enum smtp_client_errcat cat, const char *reason)
{
    struct upstream_outcome o = {.conn_fault = true, .category = cat};
    snprintf(o.reason, sizeof o.reason, "%.*s", (int)sizeof o.reason - 1, reason);
    j->done(j, &o);
}

static void fail_queued(struct upstream *u, enum smtp_client_errcat cat, const char *reason)
{
    struct upstream_job *j;
    while ((j = pop_job(u)) != NULL)
        fail_job(j, cat, reason);
}

void upstream_submit(struct upstream *u, struct upstream_job *job)
{
    job->next = NULL;
    if (u->q_tail)
        u->q_tail->next = job;
    else
        u->q_head = job;
    u->q_tail = job;
    u->q_len++;
    pump(u);
}

/* ---- connections ---- */

static void conn_remove(struct conn *k)
{
    struct upstream *u = k->u;
    for (struct conn **pp = &u->conns; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    u->n_conns--;
    if (!k->ever_ready)
        u->n_connecting--;
    free(k);
}

static void on_ready(struct smtp_client *c, void *arg)
{
    struct conn *k = arg;
    struct upstream *u = k->u;
    (void)c;
    k->ready = k->ever_ready = true;
    u->n_connecting--;
    mark_healthy(u);
    if (k->probe && !u->q_head && !k->job) {
        tr->quit(k->c);
        conn_remove(k);
        maybe_free(u);
        return;
    }
    pump(u);
}

static void conn_done_with(struct conn *k)
{
    struct upstream *u = k->u;
    if (u->retired || tr->messages_sent(k->c) >= (unsigned long)u->msgs_per_conn) {
        tr->quit(k->c);
        conn_remove(k);
        if (u->retired)
            maybe_free(u);
        else
            pump(u);
        return;
    }
    k->ready = true;
    pump(u);
}

static void on_sent(struct smtp_client *c, const struct smtp_client_result *res, void *arg)
{
    struct conn *k = arg;
    (void)c;
    struct upstream_job *j = k->job;
    k->job = NULL;
    mark_healthy(k->u); /* a finished transaction proves the upstream works */
    if (j) {
        struct upstream_outcome o = {.res = res};
        j->done(j, &o);
    }
    conn_done_with(k);
}

static void on_error(struct smtp_client *c, const struct smtp_client_error *err, void *arg)
{
    struct conn *k = arg;
    struct upstream *u = k->u;
    struct upstream_job *j = k->job;
    /* A drop after the final "." leaves only that message's fate unknown; it
     * says nothing about the upstream or the jobs waiting for it, which go
     * to a new connection (whose failure, if the upstream is gone, tells). */
    bool ambiguous;
    bool health_failure =
        trouble_health_failure(j != NULL, err->outcome_unknown, k->ever_ready, &ambiguous);
    char reason[400];
    if (err->code)
        snprintf(reason, sizeof reason, "%s: %.160s (%d %.16s %.160s)",
                 smtp_client_errcat_name(err->category), err->reason, err->code, err->enhanced,
                 err->text);
    else
        snprintf(reason, sizeof reason, "%s: %s", smtp_client_errcat_name(err->category),
                 err->reason);
    tr->free(c);
    k->c = NULL;
    conn_remove(k);
    if (ambiguous)
        log_event(LOG_WARN, "upstream.outcome_unknown", "upstream", "%s", u->name, "reason", "%s",
                  reason, NULL);
    if (health_failure) {
        log_event(LOG_WARN, "upstream.connection_failed", "upstream", "%s", u->name, "category",
                  "%s", smtp_client_errcat_name(err->category), "reason", "%s", reason, NULL);
        u->last_category = err->category;
        mark_down(u, reason);
    }
    if (j) {
        char job_reason[320]; /* what an outcome holds: keep the warning whole */
        snprintf(job_reason, sizeof job_reason, "%.250s%s", reason,
                 err->outcome_unknown ? " (the final reply never came; a retry may duplicate)"
                                      : "");
        fail_job(j, err->category, job_reason);
    }
    if (u->health == UPSTREAM_DOWN)
        fail_queued(u, err->category, reason); /* let them fail over now */
    if (u->retired)
        maybe_free(u);
    else
        pump(u);
}

static const struct smtp_client_cb client_cb = {on_ready, on_sent, on_error};

static struct conn *conn_open(struct upstream *u, bool probe)
{
    struct conn *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->u = u;
    k->probe = probe;
    k->c = tr->open(u->r->base, u->r->dns, &u->opts, &client_cb, k);
    if (!k->c) {
        free(k);
        return NULL;
    }
    k->next = u->conns;
    u->conns = k;
    u->n_conns++;
    u->n_connecting++;
    return k;
}

static void refill(struct upstream *u)
{
    int64_t t = now_ms();
    u->tokens += (double)(t - u->last_refill_ms) * u->rate / 1000.0;
    double burst = u->rate < 1 ? 1 : u->rate;
    if (u->tokens > burst)
        u->tokens = burst;
    u->last_refill_ms = t;
}

/* A probe that ended without a verdict (its job went elsewhere, its
 * connection closed quietly) must not leave the upstream in limbo. */
static void settle(struct upstream *u)
{
    if (u->health == UPSTREAM_PROBING && u->n_conns == 0 && !u->q_head && !u->retired) {
        u->health = UPSTREAM_DOWN;
        u->retry_at_ms = now_ms();
        arm_timer(u->probe_timer, 100);
    }
}

static void pump(struct upstream *u)
{
    while (u->q_head && !u->retired) {
        if (u->rate > 0) {
            refill(u);
            if (u->tokens < 1) {
                int64_t wait = (int64_t)((1 - u->tokens) * 1000.0 / u->rate) + 1;
                arm_timer(u->pump_timer, wait);
                return;
            }
        }
        struct conn *idle = NULL;
        for (struct conn *k = u->conns; k; k = k->next)
            if (k->ready && !k->job && k->c && tr->is_idle(k->c)) {
                idle = k;
                break;
            }
        if (idle) {
            struct upstream_job *j = pop_job(u);
            idle->job = j;
            idle->ready = false;
            if (u->rate > 0)
                u->tokens -= 1;
            int rc = tr->send(idle->c, &j->msg);
            if (rc < 0) {
                idle->job = NULL;
                char why[96];
                snprintf(why, sizeof why, "cannot start transaction: %s", strerror(-rc));
                tr->free(idle->c);
                idle->c = NULL;
                conn_remove(idle);
                fail_job(j, SMTP_CLIENT_ERR_PROTOCOL, why);
            }
            continue;
        }
        /* open more connections while jobs outnumber those being opened */
        bool may_open =
            u->health == UPSTREAM_HEALTHY || (u->health == UPSTREAM_PROBING && u->n_conns == 0);
        if (may_open && u->n_conns < u->max_conns && (size_t)u->n_connecting < u->q_len) {
            if (!conn_open(u, false)) {
                fail_queued(u, SMTP_CLIENT_ERR_CONNECT, "cannot create connection");
                return;
            }
            continue;
        }
        break;
    }
    settle(u);
    if (!u->q_head && !u->retired) {
        bool any_idle = false;
        for (struct conn *k = u->conns; k; k = k->next)
            any_idle |= k->ready && !k->job;
        if (any_idle)
            arm_timer(u->idle_timer, IDLE_CLOSE_SECONDS * 1000);
    }
}

static void on_pump_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

static void on_idle_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *u = arg;
    (void)fd;
    (void)what;
    if (u->q_head)
        return;
    struct conn *k = u->conns;
    while (k) {
        struct conn *next = k->next;
        if (k->ready && !k->job && k->c) {
            tr->quit(k->c);
            conn_remove(k);
        }
        k = next;
    }
    settle(u);
}

static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *u = arg;
    (void)fd;
    (void)what;
    if (u->retired || u->health != UPSTREAM_DOWN)
        return;
    if (u->n_conns > 0) {
        arm_timer(u->probe_timer, 1000); /* a connection is still closing: look again */
        return;
    }
    u->health = UPSTREAM_PROBING;
    if (!conn_open(u, true))
        mark_down(u, "cannot create probe connection");
}

/* ---- lifecycle ---- */

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static char *read_secret(struct relay *r, const struct config_upstream *cfg, char *err,
                         size_t errlen)
{
    if (cfg->secret_env && *cfg->secret_env) {
        const char *v = env_secrets_get(r->env_secrets, cfg->secret_env);
        if (!v || !*v) {
            snprintf(err, errlen, "upstream %s: environment variable %s is not set", cfg->name,
                     cfg->secret_env);
            return NULL;
        }
        return strdup(v);
    }
    if (cfg->secret_file && *cfg->secret_file) {
        FILE *f = fopen(cfg->secret_file, "r");
        if (!f) {
            snprintf(err, errlen, "upstream %s: cannot read secret_file %s: %s", cfg->name,
                     cfg->secret_file, strerror(errno));
            return NULL;
        }
        char buf[4096];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        char *s = strdup(buf);
        explicit_bzero(buf, sizeof buf);
        return s;
    }
    snprintf(err, errlen, "upstream %s: auth is set but neither secret_file nor secret_env",
             cfg->name);
    return NULL;
}

struct upstream *upstream_new(struct relay *r, const struct config_upstream *cfg, char *err,
                              size_t errlen)
{
    struct upstream *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->r = r;
    snprintf(u->name, sizeof u->name, "%s", cfg->name);
    u->host = strdup(cfg->host ? cfg->host : "");
    u->ca_file = dup_or_null(cfg->ca_file);
    u->server_name = dup_or_null(cfg->tls_server_name);
    u->pin = dup_or_null(cfg->tls_pin_sha256);
    u->username = dup_or_null(cfg->username);
    u->helo = strdup(r->cfg->hostname);
    if (cfg->auth != CONFIG_AUTH_NONE) {
        u->secret = read_secret(r, cfg, err, errlen);
        if (!u->secret)
            goto fail;
    }
    if (cfg->tls != CONFIG_TLS_NONE) {
        u->tls = tls_client_ctx_new(u->ca_file, err, errlen);
        if (!u->tls)
            goto fail;
    }
    u->max_conns = cfg->max_connections > 0 ? cfg->max_connections : 10;
    u->msgs_per_conn = cfg->messages_per_connection > 0 ? cfg->messages_per_connection : 100;
    u->rate = cfg->rate_per_second;
    u->tokens = u->rate > 1 ? u->rate : 1;
    u->last_refill_ms = now_ms();
    unsigned t = (unsigned)(cfg->timeout > 0 ? cfg->timeout : 300) * 1000u;
    u->opts = (struct smtp_client_opts){
        .host = u->host,
        .port = cfg->port,
        .tls = cfg->tls,
        .verify = cfg->verify,
        .pin_sha256 = u->pin,
        .ca_file = u->ca_file,
        .server_name = u->server_name,
        .tls_ctx = u->tls,
        .auth = cfg->auth,
        .username = u->username,
        .secret = u->secret,
        .helo_name = u->helo,
        .timeouts = {.connect_ms =
                         (unsigned)(cfg->connect_timeout > 0 ? cfg->connect_timeout : 30) * 1000u,
                     .initial_ms = t,
                     .command_ms = t,
                     .mail_ms = t,
                     .rcpt_ms = t,
                     .data_init_ms = t,
                     .data_block_ms = t,
                     .data_final_ms = t},
    };
    u->pump_timer = evtimer_new(r->base, on_pump_timer, u);
    u->probe_timer = evtimer_new(r->base, on_probe_timer, u);
    u->idle_timer = evtimer_new(r->base, on_idle_timer, u);
    return u;
fail:
    upstream_destroy(u); /* also wipes a secret already read */
    return NULL;
}

/* Frees everything u holds; parts never made (a failed upstream_new) are NULL. */
static void upstream_destroy(struct upstream *u)
{
    if (u->pump_timer)
        event_free(u->pump_timer);
    if (u->probe_timer)
        event_free(u->probe_timer);
    if (u->idle_timer)
        event_free(u->idle_timer);
    tls_client_ctx_free(u->tls);
    if (u->secret) {
        explicit_bzero(u->secret, strlen(u->secret));
        free(u->secret);
    }
    free(u->host);
    free(u->ca_file);
    free(u->server_name);
    free(u->pin);
    free(u->username);
    free(u->helo);
    free(u);
}

static void maybe_free(struct upstream *u)
{
    if (u->retired && u->n_conns == 0 && !u->q_head)
        upstream_destroy(u);
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    struct conn *k = u->conns;
    while (k) {
        struct conn *next = k->next;
        tr->free(k->c); /* idle or not: the loop that would finish a QUIT is gone */
        free(k);
        k = next;
    }
    upstream_destroy(u);
}

void upstream_retire(struct upstream *u)
{
    if (!u)
        return;
    u->retired = true;
    event_del(u->pump_timer);
    event_del(u->probe_timer);
    event_del(u->idle_timer);
    fail_queued(u, SMTP_CLIENT_ERR_CONNECT, "upstream reconfigured");
    struct conn *k = u->conns;
    while (k) {
        struct conn *next = k->next;
        if (!k->job) {
            if (k->c) {
                if (k->ready)
                    tr->quit(k->c);
                else
                    tr->free(k->c);
            }
            conn_remove(k);
        }
        k = next;
    }
    maybe_free(u);
}
