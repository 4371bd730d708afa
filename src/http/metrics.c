/* Prometheus exposition of the relay's counters and the health endpoints.
 * Metric names follow the Prometheus conventions: a sluice_ prefix, base
 * units (seconds, bytes), _total for counters, labels for dimensions. */
#include "http/metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "core/config.h"
#include "core/relay.h"

/* Prometheus text exposition format 0.0.4 */
#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static const double latency_bounds[] = {0.05, 0.1, 0.25, 0.5, 1,   2.5,  5,
                                        10,   30,  60,   300, 900, 1800, 3600};

void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t n)
{
    memset(h, 0, sizeof *h);
    if (n > METRICS_MAX_BUCKETS)
        n = METRICS_MAX_BUCKETS;
    memcpy(h->bounds, bounds, n * sizeof *bounds);
    h->n_bounds = n;
}

void metrics_histogram_init_latency(struct metrics_histogram *h)
{
    metrics_histogram_init(h, latency_bounds, sizeof latency_bounds / sizeof latency_bounds[0]);
}

void metrics_histogram_observe(struct metrics_histogram *h, double value)
{
    size_t i = 0;
    while (i < h->n_bounds && value > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += value;
}

/* ---- snapshot ---- */

static int grow(void **v, size_t n, size_t size)
{
    void *p = realloc(*v, (n + 1) * size);
    if (!p)
        return -1;
    *v = p;
    return 0;
}

int metrics_snapshot_add_rejected(struct metrics_snapshot *s, const char *reason, uint64_t n)
{
    char *name = strdup(reason);
    if (!name || grow((void **)&s->rejected, s->n_rejected, sizeof *s->rejected) != 0) {
        free(name);
        return -1;
    }
    s->rejected[s->n_rejected++] = (struct metrics_count){name, n};
    return 0;
}

static int add_outcomes(struct metrics_outcomes **v, size_t *n, const char *name, uint64_t dl,
                        uint64_t df, uint64_t fl)
{
    char *copy = strdup(name);
    if (!copy || grow((void **)v, *n, sizeof **v) != 0) {
        free(copy);
        return -1;
    }
    (*v)[(*n)++] = (struct metrics_outcomes){copy, dl, df, fl};
    return 0;
}

int metrics_snapshot_add_upstream(struct metrics_snapshot *s, const char *name, uint64_t delivered,
                                  uint64_t deferred, uint64_t failed)
{
    return add_outcomes(&s->upstreams, &s->n_upstreams, name, delivered, deferred, failed);
}

int metrics_snapshot_add_credential(struct metrics_snapshot *s, const char *name,
                                    uint64_t delivered, uint64_t deferred, uint64_t failed)
{
    return add_outcomes(&s->credentials, &s->n_credentials, name, delivered, deferred, failed);
}

int metrics_snapshot_add_health(struct metrics_snapshot *s, const char *name, bool up)
{
    char *copy = strdup(name);
    if (!copy || grow((void **)&s->health, s->n_health, sizeof *s->health) != 0) {
        free(copy);
        return -1;
    }
    s->health[s->n_health++] = (struct metrics_health){copy, up};
    return 0;
}

void metrics_snapshot_clear(struct metrics_snapshot *s)
{
    for (size_t i = 0; i < s->n_rejected; i++)
        free(s->rejected[i].name);
    for (size_t i = 0; i < s->n_upstreams; i++)
        free(s->upstreams[i].name);
    for (size_t i = 0; i < s->n_credentials; i++)
        free(s->credentials[i].name);
    for (size_t i = 0; i < s->n_health; i++)
        free(s->health[i].name);
    free(s->rejected);
    free(s->upstreams);
    free(s->credentials);
    free(s->health);
    memset(s, 0, sizeof *s);
}

/* ---- rendering ---- */

/* Label values escape backslash, double quote and line feed. */
static void put_label(struct evbuffer *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            evbuffer_add(out, "\\\\", 2);
        else if (*p == '"')
            evbuffer_add(out, "\\\"", 2);
        else if (*p == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, p, 1);
    }
}

static void header(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(struct evbuffer *out, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    header(out, name, type, help);
    evbuffer_add_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

static void labelled(struct evbuffer *out, const char *name, const char *label, const char *lv,
                     const char *label2, const char *lv2, uint64_t v)
{
    evbuffer_add_printf(out, "%s{%s=\"", name, label);
    put_label(out, lv);
    if (label2) {
        evbuffer_add_printf(out, "\",%s=\"", label2);
        put_label(out, lv2);
    }
    evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)v);
}

static void outcomes(struct evbuffer *out, const char *name, const char *label, const char *help,
                     const struct metrics_outcomes *v, size_t n)
{
    header(out, name, "counter", help);
    for (size_t i = 0; i < n; i++) {
        labelled(out, name, label, v[i].name, "outcome", "delivered", v[i].delivered);
        labelled(out, name, label, v[i].name, "outcome", "deferred", v[i].deferred);
        labelled(out, name, label, v[i].name, "outcome", "failed", v[i].failed);
    }
}

static void histogram(struct evbuffer *out, const char *name, const char *help,
                      const struct metrics_histogram *h)
{
    header(out, name, "histogram", help);
    uint64_t cum = 0;
    size_t n = h->n_bounds > METRICS_MAX_BUCKETS ? METRICS_MAX_BUCKETS : h->n_bounds;
    for (size_t i = 0; i < n; i++) {
        cum += h->counts[i];
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
                            (unsigned long long)cum);
    }
    cum += h->counts[n];
    /* The +Inf bucket must equal _count; trust the buckets if they disagree. */
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    evbuffer_add_printf(out, "%s_sum %.9g\n", name, h->sum);
    evbuffer_add_printf(out, "%s_count %llu\n", name, (unsigned long long)cum);
}

int metrics_render(const struct metrics_snapshot *s, struct evbuffer *out)
{
    if (s->start_time > 0) {
        header(out, "sluice_start_time_seconds", "gauge", "Start time of the process (unix).");
        evbuffer_add_printf(out, "sluice_start_time_seconds %.3f\n", s->start_time);
    }
    scalar(out, "sluice_connections_total", "counter", "SMTP connections accepted.",
           s->connections);
    scalar(out, "sluice_sessions", "gauge", "Open SMTP sessions.", s->sessions);
    scalar(out, "sluice_messages_accepted_total", "counter", "Messages accepted into the spool.",
           s->accepted);
    scalar(out, "sluice_accepted_bytes_total", "counter", "Bytes of accepted messages.",
           s->bytes_accepted);

    header(out, "sluice_messages_rejected_total", "counter",
           "Messages or commands refused, by reason.");
    for (size_t i = 0; i < s->n_rejected; i++)
        labelled(out, "sluice_messages_rejected_total", "reason", s->rejected[i].name, NULL, NULL,
                 s->rejected[i].value);

    outcomes(out, "sluice_deliveries_total", "upstream",
             "Delivery attempts per upstream, by outcome.", s->upstreams, s->n_upstreams);
    outcomes(out, "sluice_credential_deliveries_total", "credential",
             "Delivery outcomes per submitting credential.", s->credentials, s->n_credentials);
    scalar(out, "sluice_bounces_total", "counter", "Delivery status notifications generated.",
           s->bounces);
    histogram(out, "sluice_delivery_latency_seconds",
              "Time from acceptance to successful delivery.", &s->latency);

    static const char *const states[] = {"ready", "deferred", "held", "inflight", "dead"};
    const uint64_t depth[] = {s->queue.ready, s->queue.deferred, s->queue.held, s->queue.inflight,
                              s->queue.dead};
    header(out, "sluice_queue_messages", "gauge", "Messages in the queue, by state.");
    for (size_t i = 0; i < 5; i++)
        labelled(out, "sluice_queue_messages", "state", states[i], NULL, NULL, depth[i]);
    header(out, "sluice_queue_oldest_message_age_seconds", "gauge",
           "Age of the oldest message not yet delivered.");
    evbuffer_add_printf(out, "sluice_queue_oldest_message_age_seconds %.3f\n",
                        s->oldest_message_age);

    scalar(out, "sluice_tls_handshake_failures_total", "counter",
           "TLS handshakes that failed on the submission side.", s->tls_handshake_failures);
    scalar(out, "sluice_auth_failures_total", "counter", "Failed SMTP AUTH attempts.",
           s->auth_failures);
    scalar(out, "sluice_auth_cache_hits_total", "counter",
           "AUTH PLAIN/LOGIN passwords answered from the login cache, without argon2id.",
           s->auth.cache_hits);
    scalar(out, "sluice_auth_cache_misses_total", "counter",
           "AUTH PLAIN/LOGIN passwords the login cache could not answer (checked on a worker).",
           s->auth.cache_misses);
    scalar(out, "sluice_auth_cache_evictions_total", "counter",
           "Login cache entries dropped to make room for newer ones.", s->auth.cache_evictions);
    scalar(out, "sluice_auth_cache_entries", "gauge", "Successful password checks remembered.",
           s->auth.cache_entries);
    scalar(out, "sluice_auth_argon2_verifications_total", "counter",
           "argon2id password verifications run (credential store and users file).",
           s->auth.argon2_verifications);
    scalar(out, "sluice_auth_hmac_key_verifications_total", "counter",
           "API keys checked by HMAC-SHA-256.", s->auth.hmac_key_verifications);
    scalar(out, "sluice_smuggling_attempts_total", "counter",
           "Sessions refused for bare line endings or pipelining tricks.", s->smuggling_attempts);

    header(out, "sluice_upstream_up", "gauge", "1 when the upstream is healthy, else 0.");
    for (size_t i = 0; i < s->n_health; i++)
        labelled(out, "sluice_upstream_up", "upstream", s->health[i].name, NULL, NULL,
                 s->health[i].up ? 1 : 0);
    scalar(out, "sluice_spool_writable", "gauge", "1 when the spool accepts writes, else 0.",
           s->spool_writable ? 1 : 0);
    scalar(out, "sluice_spool_free_bytes", "gauge",
           "Bytes available to the daemon on the spool's file system.", s->spool_free_bytes);
    scalar(out, "sluice_spool_damaged_ranges_total", "counter",
           "Damaged spool byte ranges recovery skipped and quarantined at this start.",
           s->spool.damaged_ranges);
    scalar(out, "sluice_spool_damaged_bytes_total", "counter",
           "Bytes in damaged spool ranges found at this start.", s->spool.damaged_bytes);
    scalar(out, "sluice_spool_compaction_bytes_total", "counter",
           "Bytes of live messages compaction copied forward.", s->spool.compaction_bytes);
    scalar(out, "sluice_spool_compaction_runs_total", "counter", "Compaction turns run.",
           s->spool.compaction_turns);
    scalar(out, "sluice_spool_unrecorded", "gauge",
           "State changes and bounces not yet durable (disk full), waiting to be appended.",
           s->spool.unrecorded);
    scalar(out, "sluice_spool_append_failures_total", "counter",
           "Appends of state changes and bounces that failed and were retried.",
           s->spool.append_failures);
    scalar(out, "sluice_webhook_events_pending", "gauge",
           "Webhook events not yet delivered to every URL.", s->webhook_pending);
    return 0;
}

bool metrics_ready(const struct metrics_snapshot *s, struct evbuffer *out)
{
    size_t up = 0;
    for (size_t i = 0; i < s->n_health; i++)
        up += s->health[i].up;
    const char *reasons[3];
    size_t n = 0;
    if (!s->accepting)
        reasons[n++] = "not accepting connections";
    if (!s->spool_writable)
        reasons[n++] = "spool not writable";
    if (!s->spool_space_known || s->spool_free_bytes < s->spool_min_free)
        reasons[n++] = "spool disk full";
    evbuffer_add_printf(out, "{\"status\":\"%s\"", n ? "not ready" : "ready");
    if (n) {
        evbuffer_add_printf(out, ",\"reasons\":[");
        for (size_t i = 0; i < n; i++)
            evbuffer_add_printf(out, "%s\"%s\"", i ? "," : "", reasons[i]);
        evbuffer_add_printf(out, "]");
    }
    evbuffer_add_printf(out, ",\"upstreams_healthy\":%zu,\"upstreams\":%zu}\n", up, s->n_health);
    return n == 0;
}

/* ---- HTTP ---- */

struct metrics_http {
    struct relay *relay;
    metrics_fill_fn fill;
    struct evhttp *http;
    int port;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct metrics_http *m = arg;
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path)
        path = "/";
    bool known = strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0 ||
                 strcmp(path, "/readyz") == 0;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!known) {
        evbuffer_add_printf(body, "not found\n");
        reply(req, HTTP_NOTFOUND, "Not Found", "text/plain; charset=utf-8", body);
    } else if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evbuffer_add_printf(body, "method not allowed\n");
        reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", body);
    } else if (strcmp(path, "/healthz") == 0) {
        /* Liveness: answering at all is the signal. */
        evbuffer_add_printf(body, "ok\n");
        reply(req, HTTP_OK, "OK", "text/plain; charset=utf-8", body);
    } else {
        struct metrics_snapshot s;
        memset(&s, 0, sizeof s);
        if (m->fill)
            m->fill(m->relay, &s);
        if (strcmp(path, "/metrics") == 0) {
            metrics_render(&s, body);
            reply(req, HTTP_OK, "OK", PROM_CONTENT_TYPE, body);
        } else if (metrics_ready(&s, body)) {
            reply(req, HTTP_OK, "OK", "application/json", body);
        } else {
            reply(req, HTTP_SERVUNAVAIL, "Service Unavailable", "application/json", body);
        }
        metrics_snapshot_clear(&s);
    }
    evbuffer_free(body);
}

/* Splits "host:port" or "[v6]:port" into host (bracket-free) and port. */
static int split_listen(const char *spec, char *host, size_t hostlen, int *port)
{
    const char *colon;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':')
            return -1;
        size_t n = (size_t)(close - spec - 1);
        if (n >= hostlen)
            return -1;
        memcpy(host, spec + 1, n);
        host[n] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon)
            return -1;
        size_t n = (size_t)(colon - spec);
        if (n >= hostlen)
            return -1;
        memcpy(host, spec, n);
        host[n] = '\0';
        if (n == 0)
            snprintf(host, hostlen, "0.0.0.0");
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

struct metrics_http *metrics_http_open(struct relay *r, metrics_fill_fn fill, char *err,
                                       size_t errlen)
{
    const char *spec = r->cfg ? r->cfg->http_listen : NULL;
    if (!spec || !*spec) {
        snprintf(err, errlen, "no [http] listen address configured");
        return NULL;
    }
    char host[256];
    int port = 0;
    if (split_listen(spec, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "[http] listen '%s': expected HOST:PORT or [IPV6]:PORT", spec);
        return NULL;
    }
    struct metrics_http *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->relay = r;
    m->fill = fill;
    m->http = evhttp_new(r->base);
    if (!m->http) {
        snprintf(err, errlen, "cannot create the HTTP server");
        free(m);
        return NULL;
    }
    evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    /* Scrapes are small; bound what a client may send or hold open. */
    evhttp_set_max_headers_size(m->http, 8192);
    evhttp_set_max_body_size(m->http, 65536);
    evhttp_set_timeout(m->http, 30);
    evhttp_set_gencb(m->http, handle, m);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(m->http, host, (uint16_t)port);
    if (!bs) {
        snprintf(err, errlen, "[http] listen %s: %s", spec,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        evhttp_free(m->http);
        free(m);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    m->port = port;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            m->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            m->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return m;
}

int metrics_http_port(const struct metrics_http *m)
{
    return m->port;
}

void metrics_http_free(struct metrics_http *m)
{
    if (!m)
        return;
    evhttp_free(m->http);
    free(m);
}
