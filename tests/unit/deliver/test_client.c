/* Tests of the delivery SMTP client against real peers: the scriptable
 * upstream (tests/support/upstream.py on aiosmtpd) for behaviour and
 * failure classification, Postfix's smtp-sink for throughput. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "net/tls_client.h"
#include "deliver/client.h"

#define PYTHON "/usr/bin/python3"
#define SMTP_SINK "/usr/sbin/smtp-sink"
#define MAX_RESULTS 8
#define MAX_RCPTS 8

static char certs_dir[PATH_MAX];
static char source_root[PATH_MAX];

/* ---- spawned peers -------------------------------------------------- */

struct upstream {
    pid_t pid;
    int port;
    char dir[PATH_MAX]; /* --store */
    char ctl[PATH_MAX]; /* --control */
};

/* Peers still running when an assertion ends a test early; the per-test
 * teardown stops them. */
#define LIVE_MAX 8
static struct upstream *live[LIVE_MAX];
static pid_t sink_pid;

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[PATH_MAX * 2];
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                rm_rf(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int run_wait(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Starts upstream.py with args (NULL-terminated) and waits for READY. A
 * missing python or aiosmtpd fails the test. */
static void upstream_start(struct upstream *u, const char *const *args)
{
    char tmpl[] = "/tmp/sluice-upstream-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    snprintf(u->dir, sizeof(u->dir), "%s/store", tmpl);
    snprintf(u->ctl, sizeof(u->ctl), "%s/control", tmpl);
    assert_int_equal(mkdir(u->dir, 0700), 0);
    assert_int_equal(mkdir(u->ctl, 0700), 0);

    char script[PATH_MAX + 64];
    snprintf(script, sizeof(script), "%s/tests/support/upstream.py", source_root);
    const char *argv[64];
    size_t n = 0;
    argv[n++] = PYTHON;
    argv[n++] = script;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--store";
    argv[n++] = u->dir;
    argv[n++] = "--control";
    argv[n++] = u->ctl;
    for (size_t i = 0; args != NULL && args[i] != NULL && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    char errlog[PATH_MAX + 16];
    snprintf(errlog, sizeof(errlog), "%s/server.err", tmpl);
    u->pid = fork();
    assert_true(u->pid >= 0);
    if (u->pid == 0) {
        /* Never outlive the test binary, even when it is killed. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(pipefd[1], 1);
        int fd = open(errlog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        close(pipefd[0]);
        execv(PYTHON, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    for (size_t i = 0; i < LIVE_MAX; i++) {
        if (live[i] == NULL) {
            live[i] = u;
            break;
        }
    }
    char line[128];
    size_t got = 0;
    u->port = 0;
    while (got < sizeof(line) - 1) {
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        if (poll(&p, 1, 15000) <= 0)
            break;
        ssize_t r = read(pipefd[0], line + got, sizeof(line) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        line[got] = '\0';
        if (strchr(line, '\n') != NULL) {
            sscanf(line, "READY %d", &u->port);
            break;
        }
    }
    close(pipefd[0]);
    if (u->port <= 0) {
        for (size_t i = 0; i < LIVE_MAX; i++)
            if (live[i] == u)
                live[i] = NULL;
        kill(u->pid, SIGKILL);
        waitpid(u->pid, NULL, 0);
        fail_msg("upstream.py did not start (see %s): is python3-aiosmtpd installed?", errlog);
    }
}

static void upstream_stop(struct upstream *u)
{
    for (size_t i = 0; i < LIVE_MAX; i++)
        if (live[i] == u)
            live[i] = NULL;
    kill(u->pid, SIGTERM);
    waitpid(u->pid, NULL, 0);
    char *slash = strrchr(u->dir, '/');
    *slash = '\0';
    rm_rf(u->dir);
}

static int count_suffix(const char *dir, const char *suffix)
{
    int n = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    struct dirent *e;
    size_t sl = strlen(suffix);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > sl && strcmp(e->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Reads DIR/NAME whole (allocated, NUL-terminated). */
static char *read_file(const char *dir, const char *name, size_t *len)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t r = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[r] = '\0';
    if (len != NULL)
        *len = r;
    return buf;
}

static bool file_contains(const char *dir, const char *name, const char *needle)
{
    char *s = read_file(dir, name, NULL);
    bool found = s != NULL && strstr(s, needle) != NULL;
    free(s);
    return found;
}

static int count_in_file(const char *dir, const char *name, const char *needle)
{
    char *s = read_file(dir, name, NULL);
    int n = 0;
    for (const char *p = s; p != NULL && (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(s);
    return n;
}

static void touch(const char *dir, const char *name, const char *content)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

/* ---- driving one client --------------------------------------------- */

struct rcopy {
    struct smtp_client_status status;
    enum smtp_client_stage stage;
    size_t n_rcpts, n_accepted;
    struct smtp_client_rcpt_result rcpts[MAX_RCPTS];
};

struct run {
    struct event_base *base;
    struct evdns_base *dns;
    struct event *guard;
    struct smtp_client *c;
    const struct smtp_client_msg *msgs;
    size_t n_msgs, next;
    bool ready;
    bool failed;
    struct smtp_client_error err;
    size_t n_results;
    struct rcopy results[MAX_RESULTS];
    char tls_info[96];
    unsigned long sent;
};

static void send_next(struct run *r)
{
    if (r->next < r->n_msgs) {
        assert_int_equal(smtp_client_send(r->c, &r->msgs[r->next++]), 0);
        /* Only one transaction at a time. */
        assert_int_equal(smtp_client_send(r->c, &r->msgs[0]), -EBUSY);
        return;
    }
    r->sent = smtp_client_messages_sent(r->c);
    smtp_client_quit(r->c);
    r->c = NULL;
    event_del(r->guard);
}

static void on_ready(struct smtp_client *c, void *arg)
{
    struct run *r = arg;
    r->ready = true;
    snprintf(r->tls_info, sizeof(r->tls_info), "%s", smtp_client_tls_info(c));
    assert_true(smtp_client_is_idle(c));
    send_next(r);
}

static void on_sent(struct smtp_client *c, const struct smtp_client_result *res, void *arg)
{
    struct run *r = arg;
    assert_true(r->n_results < MAX_RESULTS);
    struct rcopy *rc = &r->results[r->n_results++];
    rc->status = res->status;
    rc->stage = res->stage;
    rc->n_rcpts = res->n_rcpts;
    rc->n_accepted = res->n_accepted;
    for (size_t i = 0; i < res->n_rcpts && i < MAX_RCPTS; i++)
        rc->rcpts[i] = res->rcpts[i];
    send_next(r);
}

static void on_error(struct smtp_client *c, const struct smtp_client_error *err, void *arg)
{
    struct run *r = arg;
    r->failed = true;
    r->err = *err;
    /* Freeing inside the callback must be safe. */
    smtp_client_free(c);
    r->c = NULL;
    event_del(r->guard);
    /* The resolver may keep probing a dead name server: stop here. */
    event_base_loopexit(r->base, NULL);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    fail_msg("test did not finish in time");
}

static const struct smtp_client_cb callbacks = {on_ready, on_sent, on_error};

static void base_opts(struct smtp_client_opts *o, const struct upstream *u)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = u != NULL ? u->port : 1;
    o->tls = CONFIG_TLS_NONE;
    o->verify = CONFIG_VERIFY_PEER;
    o->helo_name = "client.test";
    o->timeouts.quit_ms = 3000;
    o->timeouts.connect_ms = 5000;
}

static void tls_opts(struct smtp_client_opts *o, enum config_tls_mode mode)
{
    static char ca[PATH_MAX + 16];
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs_dir);
    o->tls = mode;
    o->ca_file = ca;
    o->server_name = "localhost";
}

/* Runs one connection through all msgs (then QUIT) or until it fails. */
static void run_client(struct run *r, const struct smtp_client_opts *o,
                       const struct smtp_client_msg *msgs, size_t n)
{
    memset(r, 0, sizeof(*r));
    r->base = event_base_new();
    assert_non_null(r->base);
    r->dns = evdns_base_new(r->base, 0);
    r->msgs = msgs;
    r->n_msgs = n;
    r->guard = evtimer_new(r->base, on_guard, r);
    struct timeval tv = {20, 0};
    evtimer_add(r->guard, &tv);
    r->c = smtp_client_new(r->base, r->dns, o, &callbacks, r);
    assert_non_null(r->c);
    event_base_dispatch(r->base);
    event_free(r->guard);
    evdns_base_free(r->dns, 0);
    event_base_free(r->base);
}

static const char *const two_rcpts[] = {"alice@example.org", "bob@example.org"};
static const char simple_body[] = "From: a@example.com\r\n"
                                  "To: alice@example.org\r\n"
                                  "Subject: test\r\n"
                                  "\r\n"
                                  "Hello.\r\n";

static struct smtp_client_msg simple_msg(void)
{
    struct smtp_client_msg m = {
        .sender = "a@example.com",
        .rcpts = two_rcpts,
        .n_rcpts = 2,
        .data = simple_body,
        .len = sizeof(simple_body) - 1,
    };
    return m;
}

static void assert_delivered(const struct run *r, size_t n)
{
    if (r->failed)
        fail_msg("client error %s: %s", smtp_client_errcat_name(r->err.category), r->err.reason);
    assert_int_equal(r->n_results, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r->results[i].status.code, 250);
        assert_int_equal(r->results[i].stage, SMTP_CLIENT_STAGE_DOT);
    }
}

static void assert_error(const struct run *r, enum smtp_client_errcat cat, const char *in_reason)
{
    assert_true(r->failed);
    if (r->err.category != cat)
        fail_msg("category %s, want %s (%s)", smtp_client_errcat_name(r->err.category),
                 smtp_client_errcat_name(cat), r->err.reason);
    if (in_reason != NULL && strstr(r->err.reason, in_reason) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", r->err.reason, in_reason);
}

/* Nothing but the commands allowed before TLS reached the server. */
static void assert_nothing_in_clear(const struct upstream *u)
{
    assert_false(file_contains(u->dir, "events.jsonl", "\"verb\":\"MAIL\""));
    assert_false(file_contains(u->dir, "events.jsonl", "\"verb\":\"RCPT\""));
    assert_false(file_contains(u->dir, "events.jsonl", "\"verb\":\"AUTH\""));
    assert_false(file_contains(u->dir, "events.jsonl", "\"verb\":\"DATA\""));
    assert_int_equal(count_suffix(u->dir, ".json"), 0);
}

/* ---- tests ---------------------------------------------------------- */

static void test_plain_delivery(void **state)
{
    struct upstream u;
    upstream_start(&u, NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_int_equal(r.results[0].n_accepted, 2);
    assert_int_equal(r.results[0].rcpts[1].status.code, 250);
    assert_true(r.results[0].rcpts[1].rcpt_accepted);
    assert_int_equal(r.sent, 1);
    assert_string_equal(r.tls_info, "");
    size_t len;
    char *eml = read_file(u.dir, "000001.eml", &len);
    assert_non_null(eml);
    assert_int_equal(len, m.len);
    assert_memory_equal(eml, m.data, len);
    free(eml);
    assert_true(file_contains(u.dir, "000001.json",
                              "\"rcpt_tos\": [\"alice@example.org\", "
                              "\"bob@example.org\"]"));
    char size_param[32];
    snprintf(size_param, sizeof(size_param), "\"SIZE=%zu\"", m.len);
    assert_true(file_contains(u.dir, "000001.json", size_param));
    assert_true(file_contains(u.dir, "events.jsonl", "\"verb\":\"QUIT\""));
    upstream_stop(&u);
}

static void test_starttls_verified(void **state)
{
    char cert[PATH_MAX + 16], key[PATH_MAX + 16];
    snprintf(cert, sizeof(cert), "%s/server.pem", certs_dir);
    snprintf(key, sizeof(key), "%s/server.key", certs_dir);
    const char *args[] = {"--tls", "starttls", "--cert", cert, "--key", key, NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_non_null(strstr(r.tls_info, "TLSv1."));
    assert_true(file_contains(u.dir, "000001.json", "\"tls\": true"));
    /* EHLO again after STARTTLS (RFC 3207 4.2). */
    assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"verb\":\"EHLO\""), 2);
    upstream_stop(&u);
}

static void test_implicit_tls(void **state)
{
    char cert[PATH_MAX + 16], key[PATH_MAX + 16];
    snprintf(cert, sizeof(cert), "%s/server.pem", certs_dir);
    snprintf(key, sizeof(key), "%s/server.key", certs_dir);
    const char *args[] = {"--tls", "implicit", "--cert", cert, "--key", key, NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_IMPLICIT);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_non_null(strstr(r.tls_info, "TLSv1."));
    assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"verb\":\"EHLO\""), 1);
    upstream_stop(&u);
}

static void start_tls_upstream(struct upstream *u, const char *mode, const char *name,
                               const char *extra)
{
    char cert[PATH_MAX + 16], key[PATH_MAX + 16];
    snprintf(cert, sizeof(cert), "%s/%s.pem", certs_dir, name);
    snprintf(key, sizeof(key), "%s/%s.key", certs_dir, name);
    const char *args[] = {"--tls", mode, "--cert", cert, "--key", key, extra, NULL};
    upstream_start(u, args);
}

static void test_shared_context_resumes(void **state)
{
    /* Connections of one upstream share a context: the second resumes. */
    struct upstream u;
    start_tls_upstream(&u, "starttls", "server", NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    char err[256];
    o.tls_ctx = tls_client_ctx_new(o.ca_file, err, sizeof(err));
    assert_non_null(o.tls_ctx);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_null(strstr(r.tls_info, "resumed"));
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_non_null(strstr(r.tls_info, "resumed"));
    /* The clients dropped their references; ours is the last. */
    tls_client_ctx_free(o.tls_ctx);
    assert_int_equal(count_suffix(u.dir, ".json"), 2);
    upstream_stop(&u);
}

static void test_wrong_hostname(void **state)
{
    struct upstream u;
    start_tls_upstream(&u, "starttls", "wrong", NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    o.auth = CONFIG_AUTH_PLAIN;
    o.username = "user";
    o.secret = "secret";
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TLS, "certificate verify failed: hostname mismatch");
    assert_false(r.ready);
    assert_false(r.err.in_transaction);
    assert_nothing_in_clear(&u);
    upstream_stop(&u);
}

static void test_untrusted_certificate(void **state)
{
    struct upstream u;
    start_tls_upstream(&u, "implicit", "self", NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_IMPLICIT);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TLS, "certificate verify failed");
    assert_nothing_in_clear(&u);
    upstream_stop(&u);
}

static void read_pin(const char *name, char *out, size_t len)
{
    char *s = read_file(certs_dir, name, NULL);
    assert_non_null(s);
    snprintf(out, len, "%.64s", s);
    free(s);
}

static void test_pin_match(void **state)
{
    struct upstream u;
    start_tls_upstream(&u, "starttls", "server", NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    char pin[200], other[80];
    read_pin("wrong.pin", other, sizeof(other));
    read_pin("server.pin", pin + strlen(other) + 1, sizeof(pin) - strlen(other) - 1);
    /* A list: the second entry matches (key rotation). */
    memcpy(pin, other, strlen(other));
    pin[strlen(other)] = ',';
    o.pin_sha256 = pin;
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    upstream_stop(&u);
}

static void test_pin_mismatch(void **state)
{
    struct upstream u;
    start_tls_upstream(&u, "starttls", "server", NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    char pin[80];
    read_pin("wrong.pin", pin, sizeof(pin));
    o.pin_sha256 = pin;
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TLS, "pin mismatch");
    assert_nothing_in_clear(&u);
    upstream_stop(&u);
}

static void test_pin_without_verification(void **state)
{
    /* verify=none skips chain and name checks; a pin still binds the key. */
    struct upstream u;
    start_tls_upstream(&u, "implicit", "self", NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_IMPLICIT);
    o.verify = CONFIG_VERIFY_NONE;
    o.ca_file = NULL;
    char pin[80];
    read_pin("self.pin", pin, sizeof(pin));
    o.pin_sha256 = pin;
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);

    read_pin("server.pin", pin, sizeof(pin));
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TLS, "pin mismatch");
    upstream_stop(&u);
}

static void test_starttls_not_offered(void **state)
{
    struct upstream u;
    upstream_start(&u, NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    o.auth = CONFIG_AUTH_LOGIN;
    o.username = "user";
    o.secret = "secret";
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TLS, "does not offer STARTTLS");
    assert_nothing_in_clear(&u);
    /* Fail closed: not even QUIT went out in clear. */
    assert_false(file_contains(u.dir, "events.jsonl", "\"verb\":\"QUIT\""));
    upstream_stop(&u);
}

static void test_starttls_rejected_and_injection(void **state)
{
    struct upstream u;
    start_tls_upstream(&u, "starttls", "server", "--reply=STARTTLS=454 4.7.0 TLS not available");
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TLS, "STARTTLS rejected");
    assert_int_equal(r.err.code, 454);
    assert_string_equal(r.err.enhanced, "4.7.0");
    upstream_stop(&u);

    start_tls_upstream(&u, "starttls", "server", "--starttls-inject");
    o.port = u.port;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TLS, "injected");
    assert_nothing_in_clear(&u);
    upstream_stop(&u);
}

static void auth_run(enum config_auth_mech mech, const char *password, struct run *r,
                     struct upstream *u)
{
    start_tls_upstream(u, "starttls", "server", "--auth-user=user@example.com:s3cret pass");
    struct smtp_client_opts o;
    base_opts(&o, u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    o.auth = mech;
    o.username = "user@example.com";
    o.secret = password;
    struct smtp_client_msg m = simple_msg();
    run_client(r, &o, &m, 1);
}

static void test_auth_success(void **state)
{
    const enum config_auth_mech mechs[] = {CONFIG_AUTH_PLAIN, CONFIG_AUTH_LOGIN,
                                           CONFIG_AUTH_XOAUTH2};
    const char *names[] = {"\"mechanism\":\"PLAIN\"", "\"mechanism\":\"LOGIN\"",
                           "\"mechanism\":\"XOAUTH2\""};
    for (size_t i = 0; i < 3; i++) {
        struct upstream u;
        struct run r;
        auth_run(mechs[i], "s3cret pass", &r, &u);
        assert_delivered(&r, 1);
        assert_true(file_contains(u.dir, "events.jsonl", names[i]));
        assert_true(file_contains(u.dir, "events.jsonl", "\"ok\":true"));
        assert_true(file_contains(u.dir, "000001.json", "\"auth_user\": \"user@example.com\""));
        /* The secret never travels in the server's view of commands. */
        assert_false(file_contains(u.dir, "events.jsonl", "s3cret"));
        upstream_stop(&u);
    }
}

static void test_auth_rejected(void **state)
{
    const enum config_auth_mech mechs[] = {CONFIG_AUTH_PLAIN, CONFIG_AUTH_LOGIN,
                                           CONFIG_AUTH_XOAUTH2};
    for (size_t i = 0; i < 3; i++) {
        struct upstream u;
        struct run r;
        auth_run(mechs[i], "expired", &r, &u);
        assert_error(&r, SMTP_CLIENT_ERR_AUTH, "AUTH failed");
        assert_int_equal(r.err.code, 535);
        assert_string_equal(r.err.enhanced, "5.7.8");
        assert_false(file_contains(u.dir, "events.jsonl", "\"verb\":\"MAIL\""));
        upstream_stop(&u);
    }
}

static void test_auth_control_file_and_mech_missing(void **state)
{
    /* Run-time switch: "expired password", then fixed. */
    struct upstream u;
    start_tls_upstream(&u, "starttls", "server", "--auth-user=user:pw");
    struct smtp_client_opts o;
    base_opts(&o, &u);
    tls_opts(&o, CONFIG_TLS_STARTTLS);
    o.auth = CONFIG_AUTH_PLAIN;
    o.username = "user";
    o.secret = "pw";
    struct smtp_client_msg m = simple_msg();
    struct run r;
    touch(u.ctl, "reject-auth", "");
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_AUTH, NULL);
    assert_int_equal(r.err.code, 535);
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/reject-auth", u.ctl);
    unlink(p);
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    upstream_stop(&u);

    /* The configured mechanism is not offered. */
    const char *args[16];
    char cert[PATH_MAX + 16], key[PATH_MAX + 16];
    snprintf(cert, sizeof(cert), "%s/server.pem", certs_dir);
    snprintf(key, sizeof(key), "%s/server.key", certs_dir);
    size_t n = 0;
    args[n++] = "--tls";
    args[n++] = "starttls";
    args[n++] = "--cert";
    args[n++] = cert;
    args[n++] = "--key";
    args[n++] = key;
    args[n++] = "--auth-user=user:pw";
    args[n++] = "--auth-mechs=LOGIN";
    args[n] = NULL;
    upstream_start(&u, args);
    o.port = u.port;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_AUTH, "does not offer AUTH PLAIN");
    assert_false(file_contains(u.dir, "events.jsonl", "\"verb\":\"AUTH\""));
    upstream_stop(&u);
}

static void test_rcpt_partial_failure(void **state)
{
    const char *args[] = {"--rcpt-reply",
                          "bad@example.org=550-5.1.1 no such user\\n550 5.1.1 see docs", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    static const char *const rcpts[] = {"alice@example.org", "bad@example.org", "bob@example.org"};
    struct smtp_client_msg m = simple_msg();
    m.rcpts = rcpts;
    m.n_rcpts = 3;
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    const struct rcopy *res = &r.results[0];
    assert_int_equal(res->n_accepted, 2);
    assert_int_equal(res->rcpts[0].status.code, 250);
    assert_int_equal(res->rcpts[1].status.code, 550);
    assert_false(res->rcpts[1].rcpt_accepted);
    assert_string_equal(res->rcpts[1].status.enhanced, "5.1.1");
    assert_string_equal(res->rcpts[1].status.text, "no such user see docs");
    assert_int_equal(res->rcpts[2].status.code, 250);
    assert_true(file_contains(u.dir, "000001.json",
                              "\"rcpt_tos\": [\"alice@example.org\", \"bob@example.org\"]"));
    upstream_stop(&u);
}

/* All recipients rejected: no message; the next one on the same connection
 * starts with RSET. With and without PIPELINING. */
static void test_all_rcpts_rejected_then_rset(void **state)
{
    for (int pipelining = 0; pipelining < 2; pipelining++) {
        const char *args[] = {"--rcpt-reply", "bad@example.org=550 5.1.1 no such user",
                              pipelining ? NULL : "--no-pipelining", NULL};
        struct upstream u;
        upstream_start(&u, args);
        struct smtp_client_opts o;
        base_opts(&o, &u);
        static const char *const bad[] = {"bad@example.org"};
        struct smtp_client_msg msgs[2] = {simple_msg(), simple_msg()};
        msgs[0].rcpts = bad;
        msgs[0].n_rcpts = 1;
        struct run r;
        run_client(&r, &o, msgs, 2);
        assert_false(r.failed);
        assert_int_equal(r.n_results, 2);
        assert_int_equal(r.results[0].status.code, 550);
        assert_int_equal(r.results[0].stage, SMTP_CLIENT_STAGE_RCPT);
        assert_int_equal(r.results[0].rcpts[0].status.code, 550);
        assert_int_equal(r.results[1].status.code, 250);
        assert_int_equal(count_suffix(u.dir, ".json"), 1);
        assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"verb\":\"RSET\""), 1);
        /* Without pipelining DATA is not sent when every RCPT failed. */
        assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"verb\":\"DATA\""),
                         pipelining ? 2 : 1);
        upstream_stop(&u);
    }
}

static void test_mail_451(void **state)
{
    const char *args[] = {"--mail-reply", "451 4.3.0 try again later", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_false(r.failed);
    assert_int_equal(r.n_results, 1);
    assert_int_equal(r.results[0].stage, SMTP_CLIENT_STAGE_MAIL);
    assert_int_equal(r.results[0].status.code, 451);
    assert_string_equal(r.results[0].status.enhanced, "4.3.0");
    assert_int_equal(r.results[0].rcpts[0].status.code, 451);
    assert_int_equal(r.results[0].rcpts[1].status.code, 451);
    assert_int_equal(r.results[0].n_accepted, 0);
    assert_int_equal(count_suffix(u.dir, ".json"), 0);
    upstream_stop(&u);
}

static void test_data_452(void **state)
{
    const char *args[] = {"--data-reply", "452 4.3.1 insufficient storage", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_false(r.failed);
    assert_int_equal(r.results[0].stage, SMTP_CLIENT_STAGE_DOT);
    assert_int_equal(r.results[0].status.code, 452);
    assert_int_equal(r.results[0].rcpts[0].status.code, 452);
    assert_true(r.results[0].rcpts[0].rcpt_accepted);
    assert_int_equal(r.sent, 0);
    upstream_stop(&u);

    const char *args2[] = {"--reply", "DATA=554 5.5.1 no data today", NULL};
    upstream_start(&u, args2);
    o.port = u.port;
    run_client(&r, &o, &m, 1);
    assert_false(r.failed);
    assert_int_equal(r.results[0].stage, SMTP_CLIENT_STAGE_DATA);
    assert_int_equal(r.results[0].status.code, 554);
    upstream_stop(&u);
}

static void test_greeting_421(void **state)
{
    const char *args[] = {"--greeting-reply", "421 4.3.2 too busy", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_PROTOCOL, "greeting");
    assert_int_equal(r.err.code, 421);
    assert_string_equal(r.err.text, "too busy");
    upstream_stop(&u);

    /* "Provider down, then back" through the control directory. */
    upstream_start(&u, NULL);
    o.port = u.port;
    touch(u.ctl, "down", "");
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_PROTOCOL, NULL);
    assert_int_equal(r.err.code, 421);
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/down", u.ctl);
    unlink(p);
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    upstream_stop(&u);
}

static void test_connection_drop(void **state)
{
    const char *args[] = {"--drop-on", "MAIL", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_CLOSED, "closed");
    assert_true(r.err.in_transaction);
    assert_false(r.err.outcome_unknown);
    upstream_stop(&u);

    const char *args2[] = {"--drop-on", "DOT", NULL};
    upstream_start(&u, args2);
    o.port = u.port;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_CLOSED, NULL);
    assert_true(r.err.in_transaction);
    assert_true(r.err.outcome_unknown);
    upstream_stop(&u);

    const char *args3[] = {"--drop-after", "0", NULL};
    upstream_start(&u, args3);
    o.port = u.port;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_CLOSED, NULL);
    assert_false(r.err.in_transaction);
    upstream_stop(&u);
}

static void test_stall_timeout(void **state)
{
    const char *args[] = {"--stall", "5", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    o.timeouts.data_final_ms = 300;
    struct smtp_client_msg m = simple_msg();
    struct run r;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run_client(&r, &o, &m, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_error(&r, SMTP_CLIENT_ERR_TIMEOUT, "end of data");
    assert_true(r.err.outcome_unknown);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 4.0);
    upstream_stop(&u);

    const char *args2[] = {"--stall", "5", "--stall-on", "GREETING", NULL};
    upstream_start(&u, args2);
    o.port = u.port;
    o.timeouts.initial_ms = 200;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_TIMEOUT, "greeting");
    upstream_stop(&u);
}

static void test_connection_reuse(void **state)
{
    struct upstream u;
    upstream_start(&u, NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg msgs[3] = {simple_msg(), simple_msg(), simple_msg()};
    msgs[1].sender = "";
    struct run r;
    run_client(&r, &o, msgs, 3);
    assert_delivered(&r, 3);
    assert_int_equal(r.sent, 3);
    assert_int_equal(count_suffix(u.dir, ".json"), 3);
    assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"event\":\"connect\""), 1);
    assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"verb\":\"EHLO\""), 1);
    /* No RSET between successful transactions. */
    assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"verb\":\"RSET\""), 0);
    assert_true(file_contains(u.dir, "000002.json", "\"mail_from\": \"\""));
    assert_true(file_contains(u.dir, "000003.json", "\"connection\": 1"));
    upstream_stop(&u);
}

static void test_dot_stuffing(void **state)
{
    /* Lines starting with dots, a lone dot, long runs without dot lines
     * (sent by reference), and a body not ending in CRLF. */
    char *body = malloc(20000);
    size_t n = 0;
    n += (size_t)sprintf(body + n, ".first line\r\nSubject: dots\r\n\r\n.\r\n..\r\n");
    for (int i = 0; i < 6; i++) {
        memset(body + n, 'a' + i, 900);
        n += 900;
        n += (size_t)sprintf(body + n, "\r\n");
    }
    n += (size_t)sprintf(body + n, ".x\r\nmid . dot\r\n...\r\n");
    for (int i = 0; i < 4; i++) {
        memset(body + n, 'k' + i, 990);
        n += 990;
        n += (size_t)sprintf(body + n, "\r\n");
    }
    n += (size_t)sprintf(body + n, ".");
    struct upstream u;
    upstream_start(&u, NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg m = simple_msg();
    m.data = body;
    m.len = n;
    struct run r;
    run_client(&r, &o, &m, 1);
    if (r.failed || r.results[0].status.code != 250)
        free(body);
    assert_delivered(&r, 1);
    size_t len;
    char *eml = read_file(u.dir, "000001.eml", &len);
    assert_non_null(eml);
    /* The unterminated last line arrives completed with CRLF. */
    assert_int_equal(len, n + 2);
    assert_memory_equal(eml, body, n);
    assert_memory_equal(eml + n, "\r\n", 2);
    free(eml);
    free(body);
    upstream_stop(&u);
}

static void test_smtputf8_and_8bit(void **state)
{
    static const char *const intl[] = {"j\xc3\xb6rg@example.org"};
    struct smtp_client_msg m = simple_msg();
    m.rcpts = intl;
    m.n_rcpts = 1;

    const char *args[] = {"--no-smtputf8", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_false(r.failed);
    assert_int_equal(r.results[0].stage, SMTP_CLIENT_STAGE_LOCAL);
    assert_int_equal(r.results[0].status.code, 553);
    assert_string_equal(r.results[0].status.enhanced, "5.6.7");
    assert_false(r.results[0].status.from_server);
    assert_non_null(strstr(r.results[0].status.text, "lacks SMTPUTF8"));
    assert_int_equal(r.results[0].rcpts[0].status.code, 553);
    assert_false(file_contains(u.dir, "events.jsonl", "\"verb\":\"MAIL\""));
    upstream_stop(&u);

    upstream_start(&u, NULL);
    o.port = u.port;
    m.flags = SMTP_CLIENT_MSG_8BIT;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_true(file_contains(u.dir, "000001.json", "\"SMTPUTF8\""));
    assert_true(file_contains(u.dir, "000001.json", "\"BODY=8BITMIME\""));
    upstream_stop(&u);

    const char *args8[] = {"--no-8bitmime", NULL};
    upstream_start(&u, args8);
    o.port = u.port;
    m = simple_msg();
    m.flags = SMTP_CLIENT_MSG_8BIT;
    run_client(&r, &o, &m, 1);
    assert_int_equal(r.results[0].status.code, 554);
    assert_string_equal(r.results[0].status.enhanced, "5.6.3");
    assert_non_null(strstr(r.results[0].status.text, "lacks 8BITMIME"));
    upstream_stop(&u);
}

static void test_size_limit(void **state)
{
    const char *args[] = {"--size", "50", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg msgs[2] = {simple_msg(), simple_msg()};
    msgs[1].data = "Subject: x\r\n\r\nshort\r\n";
    msgs[1].len = strlen(msgs[1].data);
    struct run r;
    run_client(&r, &o, msgs, 2);
    assert_false(r.failed);
    assert_int_equal(r.results[0].stage, SMTP_CLIENT_STAGE_LOCAL);
    assert_int_equal(r.results[0].status.code, 552);
    assert_string_equal(r.results[0].status.enhanced, "5.3.4");
    /* A local refusal leaves the connection usable. */
    assert_int_equal(r.results[1].status.code, 250);
    assert_int_equal(count_in_file(u.dir, "events.jsonl", "\"verb\":\"MAIL\""), 1);
    upstream_stop(&u);
}

static void test_helo_fallback_and_no_pipelining(void **state)
{
    const char *args[] = {"--reply", "EHLO=502 5.5.1 EHLO not supported", NULL};
    struct upstream u;
    upstream_start(&u, args);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_true(file_contains(u.dir, "events.jsonl", "\"verb\":\"HELO\""));
    /* No SIZE parameter without EHLO. */
    assert_false(file_contains(u.dir, "000001.json", "SIZE="));
    upstream_stop(&u);

    const char *args2[] = {"--no-pipelining", "--rcpt-reply",
                           "bob@example.org=450 4.2.1 mailbox busy", NULL};
    upstream_start(&u, args2);
    o.port = u.port;
    run_client(&r, &o, &m, 1);
    assert_delivered(&r, 1);
    assert_int_equal(r.results[0].rcpts[0].status.code, 250);
    assert_int_equal(r.results[0].rcpts[1].status.code, 450);
    upstream_stop(&u);
}

static void test_connect_failures(void **state)
{
    /* A port nobody listens on: bind one, note it, close it. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    getsockname(s, (struct sockaddr *)&sa, &sl);
    close(s);
    struct smtp_client_opts o;
    base_opts(&o, NULL);
    o.port = ntohs(sa.sin_port);
    struct smtp_client_msg m = simple_msg();
    struct run r;
    run_client(&r, &o, &m, 1);
    assert_error(&r, SMTP_CLIENT_ERR_CONNECT, "Connection refused");

    /* A name that cannot resolve: the only name server is a closed local
     * port (no network), so resolution fails quickly. */
    o.host = "nonexistent.invalid";
    memset(&r, 0, sizeof(r));
    r.base = event_base_new();
    r.dns = evdns_base_new(r.base, 0);
    char ns[32];
    snprintf(ns, sizeof(ns), "127.0.0.1:%d", ntohs(sa.sin_port));
    assert_int_equal(evdns_base_nameserver_ip_add(r.dns, ns), 0);
    evdns_base_set_option(r.dns, "timeout:", "0.2");
    evdns_base_set_option(r.dns, "attempts:", "1");
    r.msgs = &m;
    r.n_msgs = 1;
    r.guard = evtimer_new(r.base, on_guard, &r);
    struct timeval tv = {20, 0};
    evtimer_add(r.guard, &tv);
    r.c = smtp_client_new(r.base, r.dns, &o, &callbacks, &r);
    event_base_dispatch(r.base);
    event_free(r.guard);
    evdns_base_free(r.dns, 0);
    event_base_free(r.base);
    assert_error(&r, SMTP_CLIENT_ERR_CONNECT, "cannot resolve");
}

static void test_hostname_resolution(void **state)
{
    /* "localhost" resolves through the hosts file, without a DNS server. */
    struct upstream u;
    upstream_start(&u, NULL);
    struct smtp_client_opts o;
    base_opts(&o, &u);
    o.host = "localhost";
    struct smtp_client_msg m = simple_msg();
    struct run r;
    memset(&r, 0, sizeof(r));
    r.base = event_base_new();
    r.dns = evdns_base_new(r.base, 0);
    assert_int_equal(evdns_base_load_hosts(r.dns, "/etc/hosts"), 0);
    r.msgs = &m;
    r.n_msgs = 1;
    r.guard = evtimer_new(r.base, on_guard, &r);
    struct timeval tv = {20, 0};
    evtimer_add(r.guard, &tv);
    r.c = smtp_client_new(r.base, r.dns, &o, &callbacks, &r);
    event_base_dispatch(r.base);
    event_free(r.guard);
    evdns_base_free(r.dns, 0);
    event_base_free(r.base);
    assert_delivered(&r, 1);
    upstream_stop(&u);
}

static void test_invalid_use(void **state)
{
    struct event_base *base = event_base_new();
    struct smtp_client_opts o;
    base_opts(&o, NULL);
    o.port = 0;
    assert_null(smtp_client_new(base, NULL, &o, &callbacks, NULL));
    o.port = 25;
    o.host = "";
    assert_null(smtp_client_new(base, NULL, &o, &callbacks, NULL));
    o.host = "127.0.0.1";
    struct smtp_client *c = smtp_client_new(base, NULL, &o, &callbacks, NULL);
    assert_non_null(c);
    struct smtp_client_msg m = simple_msg();
    assert_int_equal(smtp_client_send(c, &m), -EBUSY);
    /* Freed before the loop ever ran: no callback may fire. */
    smtp_client_free(c);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
}

/* ---- throughput against Postfix's smtp-sink -------------------------- */

#define BENCH_MESSAGES 2000 /* SLUICE_BENCH_MESSAGES overrides */
#define BENCH_CONNECTIONS 4

struct bench {
    struct event_base *base;
    struct smtp_client_msg msg;
    int remaining; /* messages not yet handed to a connection */
    int done;
    int failed;
    int open;
};

static void bench_next(struct smtp_client *c, struct bench *b)
{
    if (b->remaining > 0) {
        b->remaining--;
        assert_int_equal(smtp_client_send(c, &b->msg), 0);
    } else {
        smtp_client_quit(c);
        if (--b->open == 0)
            event_base_loopexit(b->base, NULL);
    }
}

static void bench_ready(struct smtp_client *c, void *arg)
{
    bench_next(c, arg);
}

static void bench_sent(struct smtp_client *c, const struct smtp_client_result *res, void *arg)
{
    struct bench *b = arg;
    if (res->status.code == 250)
        b->done++;
    else
        b->failed++;
    bench_next(c, b);
}

static void bench_error(struct smtp_client *c, const struct smtp_client_error *err, void *arg)
{
    struct bench *b = arg;
    fprintf(stderr, "bench connection failed: %s\n", err->reason);
    b->failed++;
    smtp_client_free(c);
    if (--b->open == 0)
        event_base_loopexit(b->base, NULL);
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&sa, sizeof(sa));
    socklen_t sl = sizeof(sa);
    getsockname(s, (struct sockaddr *)&sa, &sl);
    close(s);
    return ntohs(sa.sin_port);
}

/* smtp-sink prints nothing when it starts listening: probe until the port
 * accepts, bounded. */
static bool wait_listening(int port)
{
    for (int i = 0; i < 500; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int rc = connect(s, (struct sockaddr *)&sa, sizeof(sa));
        close(s);
        if (rc == 0)
            return true;
        poll(NULL, 0, 10);
    }
    return false;
}

static void test_smtp_sink_throughput(void **state)
{
    if (access(SMTP_SINK, X_OK) != 0)
        fail_msg("%s is not installed (Debian package postfix)", SMTP_SINK);
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (geteuid() == 0)
            execl(SMTP_SINK, SMTP_SINK, "-u", "nobody", addr, "256", (char *)NULL);
        else
            execl(SMTP_SINK, SMTP_SINK, addr, "256", (char *)NULL);
        _exit(127);
    }
    sink_pid = pid;
    if (!wait_listening(port))
        fail_msg("smtp-sink did not start");

    static const char *const rcpt[] = {"sink@example.org"};
    struct bench b;
    memset(&b, 0, sizeof(b));
    b.base = event_base_new();
    b.msg = simple_msg();
    b.msg.rcpts = rcpt;
    b.msg.n_rcpts = 1;
    const char *env = getenv("SLUICE_BENCH_MESSAGES");
    int total = env != NULL && atoi(env) > 0 ? atoi(env) : BENCH_MESSAGES;
    b.remaining = total;
    struct smtp_client_opts o;
    base_opts(&o, NULL);
    o.port = port;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    static const struct smtp_client_cb bcb = {bench_ready, bench_sent, bench_error};
    for (int i = 0; i < BENCH_CONNECTIONS; i++) {
        assert_non_null(smtp_client_new(b.base, NULL, &o, &bcb, &b));
        b.open++;
    }
    event_base_dispatch(b.base);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* Let the QUITs finish, then the loop runs dry. */
    event_base_dispatch(b.base);
    event_base_free(b.base);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("smtp-sink: %d messages over %d connections in %.3f s = %.0f msgs/s\n", b.done,
           BENCH_CONNECTIONS, secs, b.done / secs);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    sink_pid = 0;
    assert_int_equal(b.failed, 0);
    assert_int_equal(b.done, total);
}

/* ---- setup ---------------------------------------------------------- */

static int setup_certs(void **state)
{
    const char *root = getenv("SLUICE_SOURCE_ROOT");
    snprintf(source_root, sizeof(source_root), "%s", root != NULL ? root : ".");
    char tmpl[] = "/tmp/sluice-certs-XXXXXX";
    if (mkdtemp(tmpl) == NULL)
        return -1;
    snprintf(certs_dir, sizeof(certs_dir), "%s", tmpl);
    char script[PATH_MAX + 64];
    snprintf(script, sizeof(script), "%s/tests/support/certs.sh", source_root);
    char *const argv[] = {"/bin/sh", script, certs_dir, NULL};
    if (run_wait(argv) != 0) {
        fprintf(stderr, "certs.sh failed\n");
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int stop_leftovers(void **state)
{
    for (size_t i = 0; i < LIVE_MAX; i++)
        if (live[i] != NULL)
            upstream_stop(live[i]);
    if (sink_pid > 0) {
        kill(sink_pid, SIGTERM);
        waitpid(sink_pid, NULL, 0);
        sink_pid = 0;
    }
    return 0;
}

static int teardown_certs(void **state)
{
    rm_rf(certs_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_plain_delivery, stop_leftovers),
        cmocka_unit_test_teardown(test_starttls_verified, stop_leftovers),
        cmocka_unit_test_teardown(test_implicit_tls, stop_leftovers),
        cmocka_unit_test_teardown(test_shared_context_resumes, stop_leftovers),
        cmocka_unit_test_teardown(test_wrong_hostname, stop_leftovers),
        cmocka_unit_test_teardown(test_untrusted_certificate, stop_leftovers),
        cmocka_unit_test_teardown(test_pin_match, stop_leftovers),
        cmocka_unit_test_teardown(test_pin_mismatch, stop_leftovers),
        cmocka_unit_test_teardown(test_pin_without_verification, stop_leftovers),
        cmocka_unit_test_teardown(test_starttls_not_offered, stop_leftovers),
        cmocka_unit_test_teardown(test_starttls_rejected_and_injection, stop_leftovers),
        cmocka_unit_test_teardown(test_auth_success, stop_leftovers),
        cmocka_unit_test_teardown(test_auth_rejected, stop_leftovers),
        cmocka_unit_test_teardown(test_auth_control_file_and_mech_missing, stop_leftovers),
        cmocka_unit_test_teardown(test_rcpt_partial_failure, stop_leftovers),
        cmocka_unit_test_teardown(test_all_rcpts_rejected_then_rset, stop_leftovers),
        cmocka_unit_test_teardown(test_mail_451, stop_leftovers),
        cmocka_unit_test_teardown(test_data_452, stop_leftovers),
        cmocka_unit_test_teardown(test_greeting_421, stop_leftovers),
        cmocka_unit_test_teardown(test_connection_drop, stop_leftovers),
        cmocka_unit_test_teardown(test_stall_timeout, stop_leftovers),
        cmocka_unit_test_teardown(test_connection_reuse, stop_leftovers),
        cmocka_unit_test_teardown(test_dot_stuffing, stop_leftovers),
        cmocka_unit_test_teardown(test_smtputf8_and_8bit, stop_leftovers),
        cmocka_unit_test_teardown(test_size_limit, stop_leftovers),
        cmocka_unit_test_teardown(test_helo_fallback_and_no_pipelining, stop_leftovers),
        cmocka_unit_test_teardown(test_connect_failures, stop_leftovers),
        cmocka_unit_test_teardown(test_hostname_resolution, stop_leftovers),
        cmocka_unit_test_teardown(test_invalid_use, stop_leftovers),
        cmocka_unit_test_teardown(test_smtp_sink_throughput, stop_leftovers),
    };
    return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
