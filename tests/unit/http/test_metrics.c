/* Prometheus rendering, readiness rules and the HTTP endpoints served with
 * evhttp, exercised with libevent's own HTTP client on one loop. Also checks
 * that the Grafana dashboard and the alert rules only use rendered names. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/relay.h"
#include "http/metrics.h"

static void fill_full(struct metrics_snapshot *s)
{
    s->start_time = 1700000000.5;
    s->connections = 7;
    s->sessions = 2;
    s->accepted = 42;
    s->bytes_accepted = 123456;
    metrics_snapshot_add_rejected(s, "policy", 3);
    metrics_snapshot_add_rejected(s, "we\"ird\\name\n", 1);
    metrics_snapshot_add_upstream(s, "sendgrid", 40, 5, 1);
    metrics_snapshot_add_credential(s, "app1", 30, 2, 0);
    s->bounces = 1;
    metrics_histogram_init_latency(&s->latency);
    metrics_histogram_observe(&s->latency, 0.01); /* first bucket */
    metrics_histogram_observe(&s->latency, 0.3);  /* le 0.5 */
    metrics_histogram_observe(&s->latency, 7200); /* +Inf only */
    s->queue.ready = 4;
    s->queue.deferred = 5;
    s->queue.held = 1;
    s->queue.inflight = 2;
    s->queue.dead = 0;
    s->oldest_message_age = 61.5;
    s->tls_handshake_failures = 9;
    s->auth_failures = 11;
    s->smuggling_attempts = 1;
    metrics_snapshot_add_health(s, "sendgrid", true);
    metrics_snapshot_add_health(s, "ses", false);
    s->spool_writable = true;
    s->webhook_pending = 3;
}

static char *render(const struct metrics_snapshot *s)
{
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(metrics_render(s, b), 0);
    size_t n = evbuffer_get_length(b);
    char *t = malloc(n + 1);
    evbuffer_remove(b, t, n);
    t[n] = '\0';
    evbuffer_free(b);
    return t;
}

static void has_line(const char *text, const char *line)
{
    char *want = malloc(strlen(line) + 3);
    sprintf(want, "\n%s\n", line);
    char *with_nl = malloc(strlen(text) + 2);
    sprintf(with_nl, "\n%s", text);
    if (!strstr(with_nl, want))
        fail_msg("missing line: %s", line);
    free(want);
    free(with_nl);
}

static void test_render(void **state)
{
    (void)state;
    struct metrics_snapshot s;
    memset(&s, 0, sizeof s);
    fill_full(&s);
    char *t = render(&s);
    has_line(t, "# TYPE sluice_messages_accepted_total counter");
    has_line(t, "sluice_messages_accepted_total 42");
    has_line(t, "sluice_messages_rejected_total{reason=\"policy\"} 3");
    has_line(t, "sluice_messages_rejected_total{reason=\"we\\\"ird\\\\name\\n\"} 1");
    has_line(t, "sluice_deliveries_total{upstream=\"sendgrid\",outcome=\"delivered\"} 40");
    has_line(t, "sluice_deliveries_total{upstream=\"sendgrid\",outcome=\"deferred\"} 5");
    has_line(t, "sluice_deliveries_total{upstream=\"sendgrid\",outcome=\"failed\"} 1");
    has_line(t, "sluice_credential_deliveries_total{credential=\"app1\",outcome=\"delivered\"} 30");
    has_line(t, "# TYPE sluice_delivery_latency_seconds histogram");
    has_line(t, "sluice_delivery_latency_seconds_bucket{le=\"0.05\"} 1");
    has_line(t, "sluice_delivery_latency_seconds_bucket{le=\"0.25\"} 1");
    has_line(t, "sluice_delivery_latency_seconds_bucket{le=\"0.5\"} 2");
    has_line(t, "sluice_delivery_latency_seconds_bucket{le=\"3600\"} 2");
    has_line(t, "sluice_delivery_latency_seconds_bucket{le=\"+Inf\"} 3");
    has_line(t, "sluice_delivery_latency_seconds_count 3");
    has_line(t, "sluice_delivery_latency_seconds_sum 7200.31");
    has_line(t, "sluice_queue_messages{state=\"deferred\"} 5");
    has_line(t, "sluice_queue_messages{state=\"held\"} 1");
    has_line(t, "sluice_queue_oldest_message_age_seconds 61.500");
    has_line(t, "sluice_tls_handshake_failures_total 9");
    has_line(t, "sluice_auth_failures_total 11");
    has_line(t, "sluice_upstream_up{upstream=\"sendgrid\"} 1");
    has_line(t, "sluice_upstream_up{upstream=\"ses\"} 0");
    has_line(t, "sluice_spool_writable 1");
    has_line(t, "sluice_start_time_seconds 1700000000.500");
    has_line(t, "sluice_webhook_events_pending 3");
    /* Every sample line is NAME[{labels}] VALUE; every family has TYPE once. */
    size_t types = 0, helps = 0;
    for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# TYPE ", 7) == 0)
            types++;
        else if (strncmp(line, "# HELP ", 7) == 0)
            helps++;
        else
            assert_true(strncmp(line, "sluice_", 7) == 0 && strrchr(line, ' ') != NULL);
    }
    assert_int_equal(types, helps);
    assert_true(types >= 18);
    free(t);
    metrics_snapshot_clear(&s);
    assert_int_equal(s.n_rejected, 0);
}

static void test_ready_rules(void **state)
{
    (void)state;
    struct metrics_snapshot s;
    memset(&s, 0, sizeof s);
    struct evbuffer *b = evbuffer_new();
    assert_false(metrics_ready(&s, b)); /* nothing known: not ready */
    char *j = (char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(j, "not accepting connections"));
    assert_non_null(strstr(j, "spool disk full"));
    evbuffer_drain(b, evbuffer_get_length(b));
    s.accepting = true;
    s.spool_writable = true;
    s.spool_space_known = true;
    s.spool_free_bytes = 100 << 20;
    s.spool_min_free = 25 << 20;
    /* every upstream down: mail still queues, so the relay is ready */
    metrics_snapshot_add_health(&s, "a", false);
    assert_true(metrics_ready(&s, b));
    j = (char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(j, "\"status\":\"ready\""));
    assert_non_null(strstr(j, "\"upstreams_healthy\":0,\"upstreams\":1"));
    evbuffer_drain(b, evbuffer_get_length(b));
    metrics_snapshot_add_health(&s, "b", true);
    assert_true(metrics_ready(&s, b));
    j = (char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(j, "\"upstreams_healthy\":1,\"upstreams\":2"));
    evbuffer_drain(b, evbuffer_get_length(b));
    s.spool_free_bytes = 1 << 20;
    assert_false(metrics_ready(&s, b));
    j = (char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(j, "\"reasons\":[\"spool disk full\"]"));
    evbuffer_drain(b, evbuffer_get_length(b));
    s.spool_free_bytes = 100 << 20;
    s.accepting = false; /* draining after SIGTERM */
    assert_false(metrics_ready(&s, b));
    j = (char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(j, "\"reasons\":[\"not accepting connections\"]"));
    evbuffer_drain(b, evbuffer_get_length(b));
    s.accepting = true;
    s.spool_writable = false;
    assert_false(metrics_ready(&s, b));
    j = (char *)evbuffer_pullup(b, -1);
    assert_non_null(strstr(j, "spool not writable"));
    evbuffer_free(b);
    metrics_snapshot_clear(&s);
}

static void test_histogram_bounds(void **state)
{
    (void)state;
    struct metrics_histogram h;
    const double b[] = {1, 2};
    metrics_histogram_init(&h, b, 2);
    metrics_histogram_observe(&h, 1); /* le is inclusive */
    metrics_histogram_observe(&h, 1.5);
    metrics_histogram_observe(&h, 3);
    assert_int_equal(h.counts[0], 1);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[2], 1);
    assert_int_equal(h.count, 3);
}

/* ---- HTTP ---- */

static bool ready_state;
static int fills;

static void test_fill(struct relay *r, struct metrics_snapshot *s)
{
    (void)r;
    fills++;
    fill_full(s);
    s->spool_writable = ready_state;
    s->accepting = true;
    s->spool_space_known = true;
    s->spool_free_bytes = 1 << 30;
    s->spool_min_free = 1 << 20;
}

struct call {
    int code;
    char body[65536];
    char type[128];
    int *pending;
    struct event_base *base;
    struct evhttp_connection *conn;
};

static void done(struct evhttp_request *req, void *arg)
{
    struct call *c = arg;
    c->code = req ? evhttp_request_get_response_code(req) : -1;
    if (req) {
        struct evbuffer *b = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(b);
        if (n >= sizeof c->body)
            n = sizeof c->body - 1;
        evbuffer_remove(b, c->body, n);
        c->body[n] = '\0';
        const char *t = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        snprintf(c->type, sizeof c->type, "%s", t ? t : "");
    }
    if (--*c->pending == 0)
        event_base_loopexit(c->base, NULL);
}

static void request(struct event_base *base, int port, enum evhttp_cmd_type cmd, const char *path,
                    struct call *c, int *pending)
{
    struct evhttp_connection *conn =
        evhttp_connection_base_new(base, NULL, "127.0.0.1", (unsigned short)port);
    c->pending = pending;
    c->base = base;
    c->conn = conn;
    c->code = 0;
    struct evhttp_request *req = evhttp_request_new(done, c);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    (*pending)++;
    assert_int_equal(evhttp_make_request(conn, req, cmd, path), 0);
}

static void test_http_endpoints(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.http_listen = "127.0.0.1:0";
    struct relay r;
    memset(&r, 0, sizeof r);
    r.cfg = &cfg;
    r.base = base;
    char err[256] = "";
    struct metrics_http *m = metrics_http_open(&r, test_fill, err, sizeof err);
    assert_non_null(m);
    int port = metrics_http_port(m);
    assert_true(port > 0);

    static struct call c[7];
    int pending = 0;
    ready_state = true;
    request(base, port, EVHTTP_REQ_GET, "/metrics", &c[0], &pending);
    request(base, port, EVHTTP_REQ_GET, "/healthz", &c[1], &pending);
    request(base, port, EVHTTP_REQ_GET, "/readyz", &c[2], &pending);
    request(base, port, EVHTTP_REQ_GET, "/nope", &c[3], &pending);
    request(base, port, EVHTTP_REQ_POST, "/metrics", &c[4], &pending);
    request(base, port, EVHTTP_REQ_GET, "/metrics?x=1", &c[5], &pending);
    event_base_dispatch(base);
    assert_int_equal(c[0].code, 200);
    assert_non_null(strstr(c[0].type, "version=0.0.4"));
    assert_non_null(strstr(c[0].body, "\nsluice_messages_accepted_total 42\n"));
    assert_int_equal(c[1].code, 200);
    assert_string_equal(c[1].body, "ok\n");
    assert_int_equal(c[2].code, 200);
    assert_non_null(strstr(c[2].body, "\"ready\""));
    assert_int_equal(c[3].code, 404);
    assert_int_equal(c[4].code, 405);
    assert_int_equal(c[5].code, 200);

    ready_state = false;
    request(base, port, EVHTTP_REQ_GET, "/readyz", &c[6], &pending);
    event_base_dispatch(base);
    assert_int_equal(c[6].code, 503);
    assert_non_null(strstr(c[6].type, "application/json"));
    assert_non_null(strstr(c[6].body, "spool not writable"));
    assert_int_equal(fills, 4); /* /healthz and 404/405 never fill */

    for (int i = 0; i < 7; i++)
        evhttp_connection_free(c[i].conn);
    metrics_http_free(m);
    event_base_free(base);
}

static void test_bad_listen(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    struct relay r;
    memset(&r, 0, sizeof r);
    r.cfg = &cfg;
    r.base = event_base_new();
    char err[256];
    cfg.http_listen = "nonsense";
    assert_null(metrics_http_open(&r, test_fill, err, sizeof err));
    assert_non_null(strstr(err, "HOST:PORT"));
    cfg.http_listen = "127.0.0.1:99999";
    assert_null(metrics_http_open(&r, test_fill, err, sizeof err));
    event_base_free(r.base);
}

/* The dashboard and alert rules name only metrics this renderer emits. */
static void test_deploy_files_use_rendered_names(void **state)
{
    (void)state;
    const char *root = getenv("SLUICE_SOURCE_ROOT");
    if (!root)
        root = ".";
    struct metrics_snapshot s;
    memset(&s, 0, sizeof s);
    fill_full(&s);
    char *t = render(&s);
    metrics_snapshot_clear(&s);
    char path[] = "/tmp/sluice-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t, strlen(t)), (ssize_t)strlen(t));
    close(fd);
    free(t);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/unit/http/check_deploy_metrics.py' '%s' "
             "'%s/deploy/grafana/sluice-dashboard.json' '%s/deploy/prometheus/sluice-alerts.yml'",
             root, path, root, root);
    int rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_ready_rules),
        cmocka_unit_test(test_histogram_bounds),
        cmocka_unit_test(test_http_endpoints),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_deploy_files_use_rendered_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
