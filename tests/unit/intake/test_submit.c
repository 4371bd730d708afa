/* The submission transaction without any protocol: a door that is only
 * these calls (as the HTTP API and the sendmail entry are) gets the same
 * rules, fields and durability as an SMTP session. A real config and a real
 * spool in a temporary directory; no queue: the durable hook is recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/relay.h"
#include "intake/signing.h"
#include "intake/submit.h"
#include "spool/spool.h"
#include "unit/support/relay_fixture.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    struct relay r;
    char dir[RELAY_FIXTURE_DIR_MAX];
    uint64_t durable[8];
    size_t n_durable;
    struct submit_result res;
    char reply[600];
    bool done;
};

static struct fixture *current;

static void on_durable(struct relay *r, uint64_t id)
{
    (void)r;
    if (current->n_durable < 8)
        current->durable[current->n_durable++] = id;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    relay_fixture_open(&f->r, f->dir,
                       "[limits]\nmax_recipients = 3\nmax_message_size = 4K\n"
                       "[policy]\nrequired_headers =\n");
    struct relay *r = &f->r;
    char err[512];
    r->signing = signing_load(r->cfg, err, sizeof err);
    assert_non_null(r->signing);
    r->hooks.message_durable = on_durable;
    current = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    struct relay *r = &f->r;
    signing_free(r->signing);
    relay_fixture_close(r, f->dir);
    free(f);
    return 0;
}

static void on_done(void *arg, const struct submit_result *res)
{
    struct fixture *f = arg;
    f->res = *res;
    snprintf(f->reply, sizeof f->reply, "%s", res->reply);
    f->done = true;
}

static struct submit_tx *begin(struct fixture *f)
{
    struct submit_origin o = {.door = "http", .client_ip = "192.0.2.7", .helo = "api"};
    struct submit_tx *tx = submit_begin(&f->r, &o);
    assert_non_null(tx);
    return tx;
}

static struct smtp_path path(const char *addr)
{
    struct smtp_path p;
    memset(&p, 0, sizeof p);
    snprintf(p.addr, sizeof p.addr, "%s", addr);
    const char *at = strrchr(addr, '@');
    p.local_len = at ? (size_t)(at - addr) : strlen(addr);
    return p;
}

static const struct smtp_mail_params no_params = {.size = -1};

static void envelope(struct submit_tx *tx, int n_rcpts)
{
    struct authz_refusal ref;
    struct smtp_path from = path("app@shop.example");
    assert_int_equal(submit_mail(tx, &from, &no_params, &ref), SUBMIT_OK);
    static const char *const to[] = {"a@example.net", "b@example.net", "c@example.net"};
    for (int i = 0; i < n_rcpts; i++) {
        struct smtp_path p = path(to[i]);
        assert_int_equal(submit_rcpt(tx, &p, &ref), SUBMIT_OK);
    }
}

static void run_until_done(struct fixture *f)
{
    for (int i = 0; i < 100000 && !f->done; i++)
        event_base_loop(f->r.base, EVLOOP_ONCE);
    assert_true(f->done);
}

static const char MSG[] = "From: app@shop.example\r\nTo: a@example.net\r\nSubject: hi\r\n\r\n"
                          "Hello.\r\n";

/* Content in pieces, accepted only once durable: the reply names the id,
 * the hook hands it on, and the spooled message carries the fields intake
 * adds (Received first, Message-ID and Date since the message had none). */
static void test_accepted_once_durable(void **state)
{
    struct fixture *f = *state;
    struct submit_tx *tx = begin(f);
    envelope(tx, 2);
    assert_int_equal(submit_rcpt_count(tx), 2);
    assert_true(submit_feed(tx, MSG, 20));
    assert_true(submit_feed(tx, MSG + 20, 30));
    assert_true(submit_feed(tx, MSG + 50, sizeof MSG - 1 - 50));
    assert_int_equal(submit_content_len(tx), sizeof MSG - 1);
    struct authz_refusal ref;
    assert_int_equal(submit_finish(tx, on_done, f, &ref), SUBMIT_OK);
    assert_false(f->done); /* not before the commit */
    assert_int_equal(f->n_durable, 0);
    run_until_done(f);
    assert_int_equal(f->res.err, 0);
    assert_int_equal(f->n_durable, 1);
    assert_true(f->durable[0] == f->res.id);
    assert_non_null(strstr(f->reply, "250 2.0.0 Ok: queued as "));
    assert_non_null(strstr(f->reply, f->res.id_str));
    submit_free(tx);

    const struct spool_msg *m = spool_get(f->r.spool, f->durable[0]);
    assert_non_null(m);
    char *data;
    size_t len;
    assert_int_equal(spool_read(f->r.spool, f->durable[0], &data, &len), 0);
    assert_true(len > sizeof MSG);
    assert_memory_equal(data, "Received: from api (", 20);
    assert_non_null(strstr(data, "Message-ID: <"));
    assert_non_null(strstr(data, "\r\nDate: "));
    assert_non_null(strstr(data, "\r\n\r\nHello.\r\n"));
    free(data);
}

/* A door without its own decoder: the transaction reads the framing off
 * the content, so LF-only lines are refused as the SMTP smuggling defence
 * refuses them, and nothing reaches the spool. */
static void test_bare_lf_refused_without_decoder(void **state)
{
    struct fixture *f = *state;
    struct submit_tx *tx = begin(f);
    envelope(tx, 1);
    const char lf[] = "From: app@shop.example\nSubject: x\n\nbody\n";
    submit_feed(tx, lf, sizeof lf - 1);
    struct authz_refusal ref;
    assert_int_equal(submit_finish(tx, on_done, f, &ref), SUBMIT_EREFUSED);
    assert_int_equal(ref.reason, REJECT_SMUGGLING);
    assert_memory_equal(ref.reply, "550 5.5.2", 9);
    assert_false(f->done);
    submit_free(tx);
    assert_int_equal(f->n_durable, 0);
}

static void test_framing_refusals(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *content;
        size_t len;
        const char *reply;
    } cases[] = {
        {"Subject: a\r\n\r\nx\0y\r\n", 19, "554 5.6.0 Message refused: NUL"},
        {"", 0, "554 5.6.0 Message refused: empty message"},
        {"Subject: a\r\n\r\nlone\rCR\r\n", 23, "550 5.5.2 Message refused: bare CR"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct submit_tx *tx = begin(f);
        envelope(tx, 1);
        submit_feed(tx, cases[i].content, cases[i].len);
        struct authz_refusal ref;
        assert_int_equal(submit_finish(tx, on_done, f, &ref), SUBMIT_EREFUSED);
        assert_memory_equal(ref.reply, cases[i].reply, strlen(cases[i].reply));
        submit_free(tx);
    }
    /* a line of 999 octets */
    struct submit_tx *tx = begin(f);
    envelope(tx, 1);
    char line[1100];
    memcpy(line, "Subject: a\r\n\r\n", 14);
    memset(line + 14, 'x', 999);
    memcpy(line + 14 + 999, "\r\n", 2);
    submit_feed(tx, line, 14 + 999 + 2);
    struct authz_refusal ref;
    assert_int_equal(submit_finish(tx, on_done, f, &ref), SUBMIT_EREFUSED);
    assert_int_equal(ref.reason, REJECT_SYNTAX);
    assert_non_null(strstr(ref.reply, "longer than 998"));
    submit_free(tx);
    assert_false(f->done);
    assert_int_equal(f->n_durable, 0);
}

/* Over max_message_size (4K): the content stops being kept, the count goes
 * on, and the end is 552; a declared SIZE over it is refused at MAIL. */
static void test_size_limits(void **state)
{
    struct fixture *f = *state;
    struct submit_tx *tx = begin(f);
    envelope(tx, 1);
    char chunk[1024];
    memset(chunk, 'x', sizeof chunk);
    memcpy(chunk, "Subject: big\r\n\r\n", 16);
    for (int i = 0; i < 3; i++)
        assert_true(submit_feed(tx, chunk, sizeof chunk));
    for (int i = 0; i < 3; i++)
        submit_feed(tx, chunk, sizeof chunk);
    assert_true(submit_discarding(tx));
    assert_int_equal(submit_content_len(tx), 6 * sizeof chunk);
    struct authz_refusal ref;
    assert_int_equal(submit_finish(tx, on_done, f, &ref), SUBMIT_EREFUSED);
    assert_int_equal(ref.reason, REJECT_SIZE);
    assert_memory_equal(ref.reply, "552 5.3.4", 9);
    submit_free(tx);

    tx = begin(f);
    struct smtp_mail_params big = {.size = 5000};
    struct smtp_path from = path("app@shop.example");
    assert_int_equal(submit_mail(tx, &from, &big, &ref), SUBMIT_EREFUSED);
    assert_non_null(strstr(ref.reply, "exceeds the limit of 4096"));
    submit_free(tx);
}

/* max_recipients = 3: the fourth is 452 4.5.3 (RFC 5321 4.5.3.1.10), and
 * a transaction without recipients cannot finish. */
static void test_recipient_rules(void **state)
{
    struct fixture *f = *state;
    struct submit_tx *tx = begin(f);
    envelope(tx, 3);
    struct authz_refusal ref;
    struct smtp_path p = path("d@example.net");
    assert_int_equal(submit_rcpt(tx, &p, &ref), SUBMIT_EREFUSED);
    assert_int_equal(ref.reason, REJECT_RECIPIENTS);
    assert_memory_equal(ref.reply, "452 4.5.3", 9);
    assert_int_equal(submit_rcpt_count(tx), 3);
    submit_free(tx);

    tx = begin(f);
    envelope(tx, 0);
    submit_feed(tx, MSG, sizeof MSG - 1);
    assert_int_equal(submit_finish(tx, on_done, f, &ref), SUBMIT_EREFUSED);
    assert_memory_equal(ref.reply, "554 5.5.1", 9);
    submit_free(tx);
    assert_false(f->done);
}

/* Written in place, as the SMTP decoder writes: space, then the count. */
static void test_in_place_writes(void **state)
{
    struct fixture *f = *state;
    struct submit_tx *tx = begin(f);
    envelope(tx, 1);
    char *dst = submit_space(tx, sizeof MSG - 1);
    assert_non_null(dst);
    memcpy(dst, MSG, sizeof MSG - 1);
    submit_wrote(tx, sizeof MSG - 1);
    struct submit_framing fr = {.longest_line = 30};
    submit_set_framing(tx, &fr);
    struct authz_refusal ref;
    assert_int_equal(submit_finish(tx, on_done, f, &ref), SUBMIT_OK);
    run_until_done(f);
    assert_int_equal(f->res.err, 0);
    assert_non_null(f->res.message_id);
    submit_free(tx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepted_once_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bare_lf_refused_without_decoder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framing_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recipient_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_place_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
