/* Webhook delivery against a real HTTP receiver (Python's http.server) that
 * fails the first requests: every event arrives, in order per URL, signed,
 * and nothing is lost or re-sent across a restart. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/webhook.h"

struct receiver {
    pid_t pid;
    int in;  /* its stdin: closing it stops the receiver */
    int out; /* its stdout: one JSON line per request */
    char buf[65536];
    size_t len;
    int port;
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Next line from the receiver as JSON, waiting at most `timeout` seconds. */
static json_t *next_line(struct receiver *r, double timeout)
{
    double deadline = now_s() + timeout;
    for (;;) {
        char *nl = memchr(r->buf, '\n', r->len);
        if (nl) {
            size_t n = (size_t)(nl - r->buf);
            json_error_t e;
            json_t *o = json_loadb(r->buf, n, 0, &e);
            memmove(r->buf, nl + 1, r->len - n - 1);
            r->len -= n + 1;
            return o;
        }
        double left = deadline - now_s();
        if (left <= 0)
            return NULL;
        struct pollfd p = {.fd = r->out, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        ssize_t got = read(r->out, r->buf + r->len, sizeof r->buf - r->len - 1);
        if (got <= 0)
            return NULL;
        r->len += (size_t)got;
    }
}

static void start_receiver(struct receiver *r, int fail, int port, const char *secret_file)
{
    const char *root = getenv("SLUICE_SOURCE_ROOT");
    char script[4096], failarg[32], portarg[32];
    snprintf(script, sizeof script, "%s/tests/unit/http/webhook_receiver.py", root ? root : ".");
    snprintf(failarg, sizeof failarg, "%d", fail);
    snprintf(portarg, sizeof portarg, "%d", port);
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl("/usr/bin/python3", "python3", script, "--fail", failarg, "--port", portarg,
              "--secret-file", secret_file, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    memset(r, 0, sizeof *r);
    r->pid = pid;
    r->in = in[1];
    r->out = out[0];
    json_t *hello = next_line(r, 20);
    assert_non_null(hello);
    r->port = (int)json_integer_value(json_object_get(hello, "port"));
    json_decref(hello);
    assert_true(r->port > 0);
}

static void stop_receiver(struct receiver *r)
{
    close(r->in);
    int st;
    waitpid(r->pid, &st, 0);
    close(r->out);
}

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-webhook-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_secret(char *path, size_t n)
{
    snprintf(path, n, "%s/secret", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("topsecret\n", f);
    fclose(f);
}

static const struct webhook_options fast = {
    .backoff_min_ms = 20, .backoff_max_ms = 200, .timeout_ms = 5000};

static void emit_n(struct webhook *w, int from, int to)
{
    for (int i = from; i < to; i++)
        assert_int_equal(webhook_emit(w, json_pack("{s:s,s:i}", "type", "delivered", "n", i)), 0);
}

static void wait_pending_zero(struct webhook *w)
{
    double deadline = now_s() + 20;
    while (webhook_pending(w) != 0 && now_s() < deadline) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(webhook_pending(w), 0);
}

static void test_signature_vector(void **state)
{
    (void)state;
    char out[80];
    const char *body = "{\"id\":\"x\"}";
    assert_int_equal(webhook_signature((const unsigned char *)"topsecret", 9, "1700000000", body,
                                       strlen(body), out, sizeof out),
                     0);
    /* Independently computed with Python's hmac module. */
    assert_string_equal(out,
                        "sha256=f222a6bd6510f7a55e2f9c68bb0d0cd64ab31438cf9e89d64a903ae820701be6");
}

#define EVENTS 20
#define FAILS 3

static void test_retries_order_and_restart(void **state)
{
    (void)state;
    char secret[512], dir[512], urls[512];
    write_secret(secret, sizeof secret);
    snprintf(dir, sizeof dir, "%s/webhooks", tmpdir);
    struct receiver r;
    start_receiver(&r, FAILS, 0, secret);
    snprintf(urls, sizeof urls, "http://127.0.0.1:%d/a, http://127.0.0.1:%d/b", r.port, r.port);

    char err[256] = "";
    struct webhook *w = webhook_open(urls, secret, dir, &fast, err, sizeof err);
    assert_non_null(w);
    emit_n(w, 0, EVENTS);

    int next[2] = {0, 0}, failures = 0, ok = 0;
    char ids[2][EVENTS][64];
    while (ok < 2 * EVENTS) {
        json_t *o = next_line(&r, 30);
        assert_non_null(o);
        const char *path = json_string_value(json_object_get(o, "path"));
        int k = strcmp(path, "/a") == 0 ? 0 : 1;
        assert_true(json_is_true(json_object_get(o, "sig_ok")));
        assert_true(json_is_true(json_object_get(o, "json")));
        const char *id = json_string_value(json_object_get(o, "id"));
        assert_non_null(id);
        assert_string_equal(id, json_string_value(json_object_get(o, "header_id")));
        int n = (int)json_integer_value(json_object_get(o, "n"));
        if (json_integer_value(json_object_get(o, "status")) == 500) {
            failures++;
            /* A failed event is retried before anything after it. */
            assert_int_equal(n, next[k]);
        } else {
            assert_int_equal(n, next[k]); /* in order, each exactly once */
            snprintf(ids[k][n], sizeof ids[k][n], "%s", id);
            next[k]++;
            ok++;
        }
        json_decref(o);
    }
    assert_int_equal(failures, FAILS);
    for (int i = 0; i < EVENTS; i++) {
        /* Both URLs see the same id for one event; ids differ between events. */
        assert_string_equal(ids[0][i], ids[1][i]);
        if (i)
            assert_string_not_equal(ids[0][i], ids[0][i - 1]);
    }
    wait_pending_zero(w);
    webhook_free(w);

    /* A restart sends nothing twice: the first event after it is the new one. */
    w = webhook_open(urls, secret, dir, &fast, err, sizeof err);
    assert_non_null(w);
    emit_n(w, 100, 101);
    for (int i = 0; i < 2; i++) {
        json_t *o = next_line(&r, 30);
        assert_non_null(o);
        assert_int_equal(json_integer_value(json_object_get(o, "n")), 100);
        assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
        json_decref(o);
    }
    wait_pending_zero(w);
    webhook_free(w);
    stop_receiver(&r);
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
    close(s);
    return ntohs(a.sin_port);
}

static void test_outbox_survives_restart(void **state)
{
    (void)state;
    char secret[512], dir[512], urls[512], outbox[600];
    write_secret(secret, sizeof secret);
    snprintf(dir, sizeof dir, "%s/durable", tmpdir);
    int port = free_port();
    snprintf(urls, sizeof urls, "http://127.0.0.1:%d/hook", port);

    /* Nobody listens yet: events stay in the outbox. */
    char err[256] = "";
    struct webhook *w = webhook_open(urls, secret, dir, &fast, err, sizeof err);
    assert_non_null(w);
    emit_n(w, 0, 5);
    assert_true(webhook_pending(w) == 5);
    webhook_free(w);

    /* A crash in the middle of an append leaves a torn last line. */
    snprintf(outbox, sizeof outbox, "%s/outbox.jsonl", dir);
    int fd = open(outbox, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"n\":99,\"ty", 11), 11);
    close(fd);

    struct receiver r;
    start_receiver(&r, 0, port, secret);
    w = webhook_open(urls, secret, dir, &fast, err, sizeof err);
    assert_non_null(w);
    emit_n(w, 5, 6);
    for (int i = 0; i < 6; i++) {
        json_t *o = next_line(&r, 30);
        assert_non_null(o);
        assert_int_equal(json_integer_value(json_object_get(o, "n")), i);
        assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
        assert_true(json_is_true(json_object_get(o, "sig_ok")));
        json_decref(o);
    }
    wait_pending_zero(w);
    webhook_free(w);
    stop_receiver(&r);
}

static void test_rejects_bad_urls(void **state)
{
    (void)state;
    char err[256] = "", dir[512];
    snprintf(dir, sizeof dir, "%s/bad", tmpdir);
    assert_null(webhook_open("ftp://example.test/x", NULL, dir, NULL, err, sizeof err));
    assert_non_null(strstr(err, "http"));
    assert_null(webhook_open(" , ", NULL, dir, NULL, err, sizeof err));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_vector),
        cmocka_unit_test(test_retries_order_and_restart),
        cmocka_unit_test(test_outbox_survives_restart),
        cmocka_unit_test(test_rejects_bad_urls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
