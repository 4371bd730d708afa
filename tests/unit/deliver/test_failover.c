/* Delivery over a fake transport (upstream_set_transport): the pools,
 * failover in priority order and the circuit breaker, without a socket. Two
 * upstreams, a (priority 10) and b (priority 20); what each "server" does is
 * scripted per port: refuse the connection, accept everything, or refuse a
 * recipient. A real config and a real spool; no queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/relay.h"
#include "deliver/deliver.h"
#include "deliver/upstream.h"
#include "spool/spool.h"
#include "unit/support/relay_fixture.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PORT_A 2601
#define PORT_B 2602

enum script { REFUSE, ACCEPT, REJECT_RCPT };

static enum script script_a, script_b;
static int opened_a, opened_b, sent_a, sent_b;

struct fake {
    struct smtp_client_cb cb;
    void *arg;
    int port;
    bool idle, dead;
    unsigned long sent;
    struct event *ev;
    const struct smtp_client_msg *msg;
    enum { DO_READY, DO_SENT, DO_ERROR } next;
};

static enum script script_of(int port)
{
    return port == PORT_A ? script_a : script_b;
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct fake *f = arg;
    struct smtp_client *c = (struct smtp_client *)f;
    if (f->next == DO_ERROR) {
        struct smtp_client_error e = {.category = SMTP_CLIENT_ERR_CONNECT};
        snprintf(e.reason, sizeof e.reason, "connection refused (fake port %d)", f->port);
        f->dead = true;
        f->cb.on_error(c, &e, f->arg);
        return;
    }
    if (f->next == DO_READY) {
        f->idle = true;
        f->cb.on_ready(c, f->arg);
        return;
    }
    struct smtp_client_rcpt_result rr[8];
    size_t n = f->msg->n_rcpts < 8 ? f->msg->n_rcpts : 8;
    bool reject = script_of(f->port) == REJECT_RCPT;
    for (size_t i = 0; i < n; i++) {
        memset(&rr[i], 0, sizeof rr[i]);
        rr[i].status.code = reject ? 550 : 250;
        snprintf(rr[i].status.text, sizeof rr[i].status.text, "%s", reject ? "no such user" : "ok");
        rr[i].status.from_server = true;
        rr[i].rcpt_accepted = !reject;
    }
    struct smtp_client_result res = {.rcpts = rr, .n_rcpts = n, .n_accepted = reject ? 0 : n};
    res.status.code = reject ? 550 : 250;
    res.status.from_server = true;
    res.stage = reject ? SMTP_CLIENT_STAGE_RCPT : SMTP_CLIENT_STAGE_DOT;
    f->sent++;
    f->idle = true;
    if (f->port == PORT_A)
        sent_a++;
    else
        sent_b++;
    f->cb.on_sent(c, &res, f->arg);
}

static struct smtp_client *fake_open(struct event_base *base, struct evdns_base *dns,
                                     const struct smtp_client_opts *opts,
                                     const struct smtp_client_cb *cb, void *cb_arg)
{
    (void)dns;
    struct fake *f = calloc(1, sizeof *f);
    f->cb = *cb;
    f->arg = cb_arg;
    f->port = opts->port;
    f->ev = event_new(base, -1, 0, fire, f);
    if (f->port == PORT_A)
        opened_a++;
    else
        opened_b++;
    f->next = script_of(f->port) == REFUSE ? DO_ERROR : DO_READY;
    event_active(f->ev, EV_TIMEOUT, 1); /* no callback before open returns */
    return (struct smtp_client *)f;
}

static int fake_send(struct smtp_client *c, const struct smtp_client_msg *msg)
{
    struct fake *f = (struct fake *)c;
    if (!f->idle || f->dead)
        return -16; /* -EBUSY */
    f->idle = false;
    f->msg = msg;
    f->next = DO_SENT;
    event_active(f->ev, EV_TIMEOUT, 1);
    return 0;
}

static void fake_free(struct smtp_client *c)
{
    struct fake *f = (struct fake *)c;
    if (!f)
        return;
    event_free(f->ev);
    free(f);
}

static void fake_quit(struct smtp_client *c)
{
    fake_free(c); /* the real client frees itself after QUIT */
}

static bool fake_is_idle(const struct smtp_client *c)
{
    return ((const struct fake *)c)->idle;
}

static unsigned long fake_messages_sent(const struct smtp_client *c)
{
    return ((const struct fake *)c)->sent;
}

static const struct upstream_transport fake_transport = {
    .open = fake_open,
    .send = fake_send,
    .quit = fake_quit,
    .free = fake_free,
    .is_idle = fake_is_idle,
    .messages_sent = fake_messages_sent,
};

struct fixture {
    struct relay r;
    char dir[RELAY_FIXTURE_DIR_MAX];
    bool done;
    char upstream[64];
    bool upstream_fault, hold;
    enum deliver_class cls;
    char reply[256];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char upstreams[512];
    snprintf(upstreams, sizeof upstreams,
             "[upstream a]\nhost = 127.0.0.1\nport = %d\ntls = none\nverify = none\n"
             "priority = 10\n"
             "[upstream b]\nhost = 127.0.0.1\nport = %d\ntls = none\nverify = none\n"
             "priority = 20\n",
             PORT_A, PORT_B);
    relay_fixture_open(&f->r, f->dir, upstreams);
    struct relay *r = &f->r;
    char err[512];
    upstream_set_transport(&fake_transport);
    r->deliver = deliver_new(r, err, sizeof err);
    assert_non_null(r->deliver);
    opened_a = opened_b = sent_a = sent_b = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    struct relay *r = &f->r;
    deliver_free(r->deliver);
    upstream_set_transport(NULL);
    relay_fixture_close(r, f->dir);
    free(f);
    return 0;
}

static void on_put(void *arg, int err, uint64_t id)
{
    (void)id;
    *(int *)arg = err == 0 ? 1 : -1;
}

static uint64_t spool_one(struct fixture *f)
{
    static const char data[] = "From: a@shop.example\r\nSubject: x\r\n\r\nhi\r\n";
    const char *rcpts[] = {"someone@example.net"};
    struct spool_envelope env = {
        .sender = "a@shop.example", .rcpts = rcpts, .n_rcpts = 1, .received = 1, .meta = ""};
    struct iovec iov = {(void *)data, sizeof data - 1};
    uint64_t id = spool_new_id(f->r.spool);
    int state = 0;
    assert_int_equal(spool_put(f->r.spool, id, &env, &iov, 1, on_put, &state), 0);
    for (int i = 0; i < 100000 && state == 0; i++)
        event_base_loop(f->r.base, EVLOOP_ONCE);
    assert_int_equal(state, 1);
    return id;
}

static void on_delivered(void *arg, uint64_t id, struct deliver_result *res)
{
    (void)id;
    struct fixture *f = arg;
    f->done = true;
    snprintf(f->upstream, sizeof f->upstream, "%s", res->upstream);
    f->upstream_fault = res->upstream_fault;
    f->hold = res->hold;
    f->cls = res->n_rcpts ? res->rcpt[0].cls : DELIVER_SKIP;
    snprintf(f->reply, sizeof f->reply, "%s", res->n_rcpts ? res->rcpt[0].reply : "");
}

static void deliver_one(struct fixture *f)
{
    uint64_t id = spool_one(f);
    const struct spool_msg *m = spool_get(f->r.spool, id);
    assert_non_null(m);
    f->done = false;
    assert_int_equal(deliver_start(f->r.deliver, m, on_delivered, f), 0);
    for (int i = 0; i < 100000 && !f->done; i++)
        event_base_loop(f->r.base, EVLOOP_ONCE);
    assert_true(f->done);
}

/* The first upstream takes it when it works; the second is never opened. */
static void test_priority_order(void **state)
{
    struct fixture *f = *state;
    script_a = ACCEPT, script_b = ACCEPT;
    deliver_one(f);
    assert_string_equal(f->upstream, "a");
    assert_int_equal(f->cls, DELIVER_OK);
    assert_int_equal(sent_a, 1);
    assert_int_equal(opened_b, 0);
}

/* a refuses connections: the message goes to b, and a is down for the
 * next one, which goes straight to b without a new attempt on a (the
 * breaker waits for its probe). */
static void test_failover_and_breaker(void **state)
{
    struct fixture *f = *state;
    script_a = REFUSE, script_b = ACCEPT;
    deliver_one(f);
    assert_string_equal(f->upstream, "b");
    assert_int_equal(f->cls, DELIVER_OK);
    assert_true(opened_a >= 1);
    int a_before = opened_a;
    deliver_one(f);
    assert_string_equal(f->upstream, "b");
    assert_int_equal(opened_a, a_before);
    assert_int_equal(sent_b, 2);
}

/* Every upstream down: the upstreams' fault, never a bounce. */
static void test_all_down_is_upstream_fault(void **state)
{
    struct fixture *f = *state;
    script_a = REFUSE, script_b = REFUSE;
    deliver_one(f);
    assert_true(f->upstream_fault);
    assert_int_not_equal(f->cls, DELIVER_PERM);
    assert_int_not_equal(f->cls, DELIVER_OK);
}

/* A recipient refused by a working upstream is the message's fate, not a
 * reason to fail over: b is not tried. */
static void test_recipient_refusal_is_final(void **state)
{
    struct fixture *f = *state;
    script_a = REJECT_RCPT, script_b = ACCEPT;
    deliver_one(f);
    assert_int_equal(f->cls, DELIVER_PERM);
    assert_false(f->upstream_fault);
    assert_non_null(strstr(f->reply, "no such user"));
    assert_int_equal(opened_b, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_priority_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_and_breaker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_down_is_upstream_fault, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recipient_refusal_is_final, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
