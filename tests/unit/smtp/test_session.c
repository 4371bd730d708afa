/* The session state machine, driven over a socketpair with only the parts
 * a session uses (config, TLS context, a spool in a temporary directory; no
 * queue, no delivery, no listener): which
 * command each state accepts, the replies, and that 250 comes only after the
 * spool committed the message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/relay.h"
#include "core/worker.h"
#include "net/cidr.h"
#include "net/tls.h"
#include "policy/users.h"
#include "smtp/session.h"
#include "intake/signing.h"
#include "spool/spool.h"
#include "unit/support/relay_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fixture {
    struct relay r;
    char dir[RELAY_FIXTURE_DIR_MAX];
    int client; /* our end of the socketpair */
    char buf[65536];
    size_t len;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    relay_fixture_open(&f->r, f->dir,
                       "relay_networks = 127.0.0.1/32\n"
                       "[limits]\nmax_recipients = 3\nmax_bad_commands = 50\n"
                       "max_message_size = 4K\n[policy]\nrequired_headers =\n");
    struct relay *r = &f->r;
    char err[512];
    assert_int_equal(
        tls_ensure_self_signed(r->cfg->tls_cert, r->cfg->tls_key, "relay.test", err, sizeof err),
        0);
    r->tls = tls_server_ctx_new(r->cfg, err, sizeof err);
    assert_non_null(r->tls);
    r->users = users_load(NULL, err, sizeof err);
    r->signing = signing_load(r->cfg, err, sizeof err);
    assert_non_null(r->signing);
    r->relay_nets = calloc(1, sizeof *r->relay_nets);
    assert_int_equal(cidr_list_parse(r->cfg->relay_networks, r->relay_nets, NULL), 0);
    r->worker = worker_new(r->base, 1);
    /* no queue and no delivery: the session needs neither; what is durable
     * goes to hooks.message_durable, which nobody listens to here */

    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    f->client = sv[0];
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    session_start(r, sv[1], (struct sockaddr *)&sin, sizeof sin, false, false);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    struct relay *r = &f->r;
    close(f->client);
    session_close_all(r);
    worker_free(r->worker);
    users_free(r->users);
    signing_free(r->signing);
    cidr_list_free(r->relay_nets);
    free(r->relay_nets);
    SSL_CTX_free(r->tls);
    relay_fixture_close(r, f->dir);
    free(f);
    return 0;
}

/* Runs the loop until a complete reply (last line "NNN ") is buffered;
 * returns it (NUL-terminated) and consumes it. */
static const char *read_reply(struct fixture *f)
{
    static char out[65536];
    for (int spins = 0; spins < 100000; spins++) {
        ssize_t n = read(f->client, f->buf + f->len, sizeof f->buf - f->len - 1);
        if (n > 0)
            f->len += (size_t)n;
        /* find the end of a final reply line: "DDD " at a line start */
        size_t start = 0;
        for (size_t i = 0; i + 1 < f->len; i++) {
            if (f->buf[i] == '\r' && f->buf[i + 1] == '\n') {
                if (i - start >= 4 && f->buf[start + 3] == ' ') {
                    size_t total = i + 2;
                    memcpy(out, f->buf, total);
                    out[total] = 0;
                    memmove(f->buf, f->buf + total, f->len - total);
                    f->len -= total;
                    return out;
                }
                start = i + 2;
            }
        }
        event_base_loop(f->r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        if (n <= 0)
            usleep(200);
    }
    fail_msg("no reply");
    return NULL;
}

static void say(struct fixture *f, const char *text)
{
    size_t n = strlen(text);
    assert_int_equal(write(f->client, text, n), (ssize_t)n);
}

static void expect(struct fixture *f, const char *cmd, const char *prefix)
{
    if (cmd)
        say(f, cmd);
    const char *r = read_reply(f);
    if (strncmp(r, prefix, strlen(prefix)) != 0)
        fail_msg("after %s expected '%s', got '%s'", cmd ? cmd : "(connect)", prefix, r);
}

static void test_greeting_and_sequence(void **state)
{
    struct fixture *f = *state;
    expect(f, NULL, "220 relay.test");
    expect(f, "MAIL FROM:<a@b.test>\r\n", "503 5.5.1");
    expect(f, "RCPT TO:<a@b.test>\r\n", "503 5.5.1");
    expect(f, "DATA\r\n", "503 5.5.1");
    expect(f, "NOOP\r\n", "250 2.0.0");
    expect(f, "VRFY someone\r\n", "252 2.5.0");
    expect(f, "EXPN list\r\n", "502 5.5.1");
    expect(f, "FOO\r\n", "500 5.5.2");
    expect(f, "EHLO client.test\r\n", "250-relay.test");
    expect(f, "RCPT TO:<a@b.test>\r\n", "503 5.5.1");
    expect(f, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0");
    expect(f, "MAIL FROM:<a@b.test>\r\n", "503 5.5.1");
    expect(f, "DATA\r\n", "503 5.5.1");
    expect(f, "EHLO again\r\n", "503 5.5.1");
    expect(f, "RSET\r\n", "250 2.0.0");
    expect(f, "RCPT TO:<a@b.test>\r\n", "503 5.5.1");
    expect(f, "QUIT\r\n", "221 2.0.0");
}

static void test_auth_needs_tls_off_loopback_setting(void **state)
{
    struct fixture *f = *state;
    expect(f, NULL, "220");
    say(f, "EHLO c\r\n");
    const char *r = read_reply(f);
    assert_non_null(strstr(r, "250-STARTTLS"));
    assert_null(strstr(r, "AUTH"));
    expect(f, "AUTH PLAIN AGFwcABwYXNz\r\n", "538 5.7.11");
}

static void test_transaction_commits_before_250(void **state)
{
    struct fixture *f = *state;
    expect(f, NULL, "220");
    expect(f, "EHLO c\r\n", "250");
    expect(f, "MAIL FROM:<app@shop.test> SIZE=100\r\n", "250 2.1.0");
    expect(f, "RCPT TO:<x@dest.test>\r\n", "250 2.1.5");
    expect(f, "RCPT TO:<y@dest.test>\r\n", "250 2.1.5");
    expect(f, "RCPT TO:<z@dest.test>\r\n", "250 2.1.5");
    expect(f, "RCPT TO:<w@dest.test>\r\n", "452 4.5.3");
    expect(f, "DATA\r\n", "354");
    say(f, "Subject: hi\r\n\r\n..leading dot\r\n.\r\n");
    const char *r = read_reply(f);
    assert_memory_equal(r, "250 2.0.0 Ok: queued as ", 24);
    uint64_t id;
    char ids[17];
    memcpy(ids, r + 24, 16);
    ids[16] = 0;
    assert_int_equal(spool_id_parse(ids, &id), 0);
    const struct spool_msg *m = spool_get(f->r.spool, id);
    assert_non_null(m); /* committed: visible in the spool */
    assert_int_equal(m->n_rcpts, 3);
    char *data;
    size_t len;
    assert_int_equal(spool_read(f->r.spool, id, &data, &len), 0);
    assert_non_null(strstr(data, "Received: from c ([127.0.0.1])"));
    assert_non_null(strstr(data, "\r\n.leading dot\r\n"));
    assert_non_null(strstr(data, "Message-ID: <"));
    assert_non_null(strstr(data, "Date: "));
    free(data);
    expect(f, "NOOP\r\n", "250");
}

static void test_bad_content_refused_session_continues(void **state)
{
    struct fixture *f = *state;
    expect(f, NULL, "220");
    expect(f, "EHLO c\r\n", "250");
    expect(f, "MAIL FROM:<a@shop.test>\r\n", "250");
    expect(f, "RCPT TO:<x@dest.test>\r\n", "250");
    expect(f, "DATA\r\n", "354");
    /* a smuggled end of data (<LF>.<LF>) with a command after it */
    say(f, "Subject: s\r\n\r\nbody\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n");
    expect(f, NULL, "550 5.5.2");
    expect(f, "MAIL FROM:<a@shop.test>\r\n", "250");
    expect(f, "RCPT TO:<x@dest.test>\r\n", "250");
    expect(f, "DATA\r\n", "354");
    char big[6000];
    memset(big, 'a', sizeof big);
    for (size_t i = 70; i < sizeof big; i += 72) {
        big[i] = '\r';
        big[i + 1] = '\n';
    }
    big[sizeof big - 1] = 0;
    say(f, "Subject: big\r\n\r\n");
    say(f, big);
    expect(f, "\r\n.\r\n", "552 5.3.4");
    struct spool_stats st;
    spool_get_stats(f->r.spool, &st);
    assert_int_equal(st.messages, 0);
    expect(f, "QUIT\r\n", "221");
}

static void test_bdat_and_pipelining(void **state)
{
    struct fixture *f = *state;
    expect(f, NULL, "220");
    expect(f, "EHLO c\r\n", "250");
    /* BDAT before RCPT: the chunk is read, then refused */
    expect(f, "BDAT 5\r\nhello", "503 5.5.1");
    say(f, "MAIL FROM:<a@shop.test>\r\nRCPT TO:<x@dest.test>\r\nBDAT 14\r\nSubject: b\r\n\r\n"
           "BDAT 6 LAST\r\nbody\r\n");
    expect(f, NULL, "250 2.1.0");
    expect(f, NULL, "250 2.1.5");
    expect(f, NULL, "250 2.0.0 14 octets");
    expect(f, NULL, "250 2.0.0 Ok: queued as");
    expect(f, "DATA\r\n", "503 5.5.1");
}

static void test_line_limits(void **state)
{
    struct fixture *f = *state;
    expect(f, NULL, "220");
    char line[700];
    memset(line, 'x', sizeof line);
    memcpy(line, "NOOP ", 5);
    line[sizeof line - 3] = '\r';
    line[sizeof line - 2] = '\n';
    line[sizeof line - 1] = 0;
    expect(f, line, "500 5.5.6 Line too long");
    expect(f, "NOOP\n", "500 5.5.2 Command lines must end with CRLF");
    expect(f, "NOOP\r\n", "250");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greeting_and_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_needs_tls_off_loopback_setting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_commits_before_250, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_content_refused_session_continues, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bdat_and_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_line_limits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
