/* Configuration: defaults, file and environment layering, every class of
 * error with its line, the value parsers, dump -> load round trips, and the
 * shipped example file and key reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"

static struct config *load_ok(const char *text, char *const *envp)
{
    struct config *cfg = NULL;
    struct config_errors errs;
    int rc = config_load_string(text, "test.conf", envp, &cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "unexpected: %s:%d: %s\n", errs.v[i].file ? errs.v[i].file : "-",
                errs.v[i].line, errs.v[i].message);
    assert_int_equal(rc, 0);
    assert_int_equal(errs.n, 0);
    config_errors_free(&errs);
    return cfg;
}

/* Asserts that loading fails with an error at `line` whose message contains
 * `needle`. */
static void expect_error_env(const char *text, char *const *envp, int line, const char *needle)
{
    struct config *cfg = NULL;
    struct config_errors errs;
    bool found = false;
    assert_int_equal(config_load_string(text, "test.conf", envp, &cfg, &errs), -1);
    assert_non_null(cfg);
    for (size_t i = 0; i < errs.n; i++) {
        if (errs.v[i].line == line && strstr(errs.v[i].message, needle))
            found = true;
        if (line > 0)
            assert_string_equal(errs.v[i].file, "test.conf");
    }
    if (!found) {
        fprintf(stderr, "wanted line %d '%s', got:\n", line, needle);
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "  %d: %s\n", errs.v[i].line, errs.v[i].message);
    }
    assert_true(found);
    config_errors_free(&errs);
    config_free(cfg);
}

static void expect_error(const char *text, int line, const char *needle)
{
    expect_error_env(text, NULL, line, needle);
}

static char *dump_to_string(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_dump(cfg, f);
    fclose(f);
    return buf;
}

static char *read_source_file(const char *rel)
{
    const char *root = getenv("SLUICE_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", root ? root : ".", rel);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0, len = 0, n;
    do {
        cap = cap ? cap * 2 : 65536;
        buf = realloc(buf, cap + 1);
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (len == cap);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok(NULL, NULL);
    assert_null(cfg->path);
    assert_non_null(cfg->hostname);
    assert_true(cfg->hostname[0] != '\0');
    assert_string_equal(cfg->listen_submission, "127.0.0.1:2525");
    assert_string_equal(cfg->listen_smtps, "127.0.0.1:4650");
    assert_string_equal(cfg->var_dir, "./var");
    assert_string_equal(cfg->spool_dir, "./var/spool");
    assert_string_equal(cfg->capture_dir, "./var/capture");
    assert_string_equal(cfg->control_socket, "./var/control.sock");
    assert_string_equal(cfg->tls_cert, "./var/tls/cert.pem");
    assert_string_equal(cfg->tls_key, "./var/tls/key.pem");
    assert_string_equal(cfg->users_file, "./var/users");
    assert_string_equal(cfg->relay_networks, "auto");
    assert_string_equal(cfg->tls_min_version, "1.2");
    assert_string_equal(cfg->log_format, "json");
    assert_string_equal(cfg->log_level, "info");
    assert_string_equal(cfg->log_file, "");
    assert_int_equal(cfg->shutdown_grace, 30);
    assert_false(cfg->allow_plaintext_loopback);
    assert_int_equal(cfg->max_message_size, 25LL * 1024 * 1024);
    assert_int_equal(cfg->max_recipients, 100);
    assert_int_equal(cfg->max_line_length, 512);
    assert_int_equal(cfg->command_timeout, 300);
    assert_int_equal(cfg->data_timeout, 180);
    assert_int_equal(cfg->max_connections, 1000);
    assert_int_equal(cfg->max_connections_per_ip, 100);
    assert_int_equal(cfg->max_bad_commands, 10);
    assert_int_equal(cfg->retry_base, 60);
    assert_int_equal(cfg->retry_cap, 3600);
    assert_int_equal(cfg->max_lifetime, 5 * 86400);
    assert_true(cfg->bounces);
    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].name, "capture");
    assert_true(cfg->upstreams[0].capture);
    assert_null(cfg->upstreams[0].host);
    assert_int_equal(cfg->upstreams[0].priority, 10);
    assert_int_equal(cfg->upstreams[0].max_connections, 10);
    assert_int_equal(cfg->upstreams[0].messages_per_connection, 100);
    assert_true(cfg->upstreams[0].rate_per_second == 0);
    assert_ptr_equal(config_upstream_find(cfg, "capture"), &cfg->upstreams[0]);
    assert_null(config_upstream_find(cfg, "nope"));
    config_free(cfg);
}

static void test_file_overrides(void **state)
{
    (void)state;
    struct config *cfg =
        load_ok("; comment\n"
                "# another\n"
                "[server]\n"
                "hostname = mx.example.org\n"
                "var_dir = /srv/sluice/\n"
                "capture_dir = /tmp/cap\n"
                "listen_smtps =\n"
                "listen_submission = [::1]:587 ; inline comment\n"
                "relay_networks = 10.0.0.0/8, fd00::/8,\n"
                "    192.168.1.7\n"
                "\n"
                "[tls]\n"
                "tls_min_version = 1.3\n"
                "[auth]\n"
                "allow_plaintext_loopback = yes\n"
                "[limits]\n"
                "max_message_size = 10MiB\n"
                "command_timeout = 2m\n"
                "[queue]\n"
                "max_lifetime = 2d\n"
                "bounces = off\n"
                "[log]\n"
                "format = text\n"
                "[upstream backup]\n"
                "host = smtp2.example.net\n"
                "priority = 20\n"
                "[upstream ses]\n"
                "host = email-smtp.eu-west-1.amazonaws.com\n"
                "tls = implicit\n"
                "auth = login\n"
                "username = AKIAEXAMPLE\n"
                "secret_file = /run/secrets/ses\n"
                "rate = 600/min\n"
                "[upstream main]\n"
                "host = smtp.example.net\n"
                "tls_pin_sha256 = "
                "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\n",
                NULL);
    assert_string_equal(cfg->path, "test.conf");
    assert_string_equal(cfg->hostname, "mx.example.org");
    assert_string_equal(cfg->var_dir, "/srv/sluice/");
    assert_string_equal(cfg->spool_dir, "/srv/sluice/spool");
    assert_string_equal(cfg->capture_dir, "/tmp/cap");
    assert_string_equal(cfg->tls_cert, "/srv/sluice/tls/cert.pem");
    assert_string_equal(cfg->listen_smtps, "");
    assert_string_equal(cfg->listen_submission, "[::1]:587");
    assert_string_equal(cfg->relay_networks, "10.0.0.0/8, fd00::/8, 192.168.1.7");
    assert_string_equal(cfg->tls_min_version, "1.3");
    assert_true(cfg->allow_plaintext_loopback);
    assert_int_equal(cfg->max_message_size, 10LL * 1024 * 1024);
    assert_int_equal(cfg->command_timeout, 120);
    assert_int_equal(cfg->max_lifetime, 2 * 86400);
    assert_false(cfg->bounces);
    assert_string_equal(cfg->log_format, "text");

    /* No embedded capture once upstreams exist; sorted by priority, stable. */
    assert_int_equal(cfg->n_upstreams, 3);
    assert_string_equal(cfg->upstreams[0].name, "ses");
    assert_string_equal(cfg->upstreams[1].name, "main");
    assert_string_equal(cfg->upstreams[2].name, "backup");
    assert_int_equal(cfg->upstreams[0].port, 465);
    assert_int_equal(cfg->upstreams[0].tls, CONFIG_TLS_IMPLICIT);
    assert_int_equal(cfg->upstreams[0].auth, CONFIG_AUTH_LOGIN);
    assert_string_equal(cfg->upstreams[0].username, "AKIAEXAMPLE");
    assert_string_equal(cfg->upstreams[0].secret_file, "/run/secrets/ses");
    assert_null(cfg->upstreams[0].secret_env);
    assert_true(cfg->upstreams[0].rate_per_second == 10.0);
    assert_int_equal(cfg->upstreams[1].port, 587);
    assert_int_equal(cfg->upstreams[1].tls, CONFIG_TLS_STARTTLS);
    assert_int_equal(cfg->upstreams[1].verify, CONFIG_VERIFY_PEER);
    assert_false(cfg->upstreams[1].capture);
    assert_string_equal(cfg->upstreams[1].tls_pin_sha256,
                        "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
    assert_int_equal(cfg->upstreams[2].priority, 20);
    config_free(cfg);
}

static void test_env_overrides(void **state)
{
    (void)state;
    char *env[] = {
        "PATH=/usr/bin",
        "SLUICE_CONFIG=/etc/sluice.conf",
        "SLUICE_TESTDATA=/tmp",
        "SLUICE_SOURCE_ROOT=/src",
        "SLUICE_PSL_FILE=/usr/share/publicsuffix/public_suffix_list.dat",
        "SLUICE_DNS_TRUST_ANCHOR=/usr/share/dns/root.key",
        "SLUICE_LIMITS_MAX_MESSAGE_SIZE=10M",
        "SLUICE_SERVER_LISTEN_SUBMISSION= 0.0.0.0:587 ",
        "SLUICE_SERVER_VAR_DIR=/data",
        "SLUICE_TLS_MIN_VERSION=1.3",
        "SLUICE_LOG_LEVEL=debug",
        "SLUICE_UPSTREAM_MY_RELAY_PORT=2525",
        "SLUICE_UPSTREAM_SENDGRID_HOST=smtp.sendgrid.net",
        "SLUICE_UPSTREAM_SENDGRID_AUTH=plain",
        "SLUICE_UPSTREAM_SENDGRID_USERNAME=apikey",
        "SLUICE_UPSTREAM_SENDGRID_SECRET_ENV=SLUICE_SENDGRID_KEY",
        "SLUICE_UPSTREAM_SENDGRID_MAX_CONNECTIONS=4",
        "SLUICE_SENDGRID_KEY=SG.secret",
        NULL,
    };
    struct config *cfg = load_ok("[limits]\n"
                                 "max_message_size = 50M\n"
                                 "max_recipients = 7\n"
                                 "[upstream my-relay]\n"
                                 "host = 127.0.0.1\n"
                                 "tls = none\n",
                                 env);
    assert_int_equal(cfg->max_message_size, 10LL * 1024 * 1024);
    assert_int_equal(cfg->max_recipients, 7);
    assert_string_equal(cfg->listen_submission, "0.0.0.0:587");
    assert_string_equal(cfg->spool_dir, "/data/spool");
    assert_string_equal(cfg->tls_min_version, "1.3");
    assert_string_equal(cfg->log_level, "debug");
    assert_int_equal(cfg->n_upstreams, 2);
    const struct config_upstream *r = config_upstream_find(cfg, "my-relay");
    const struct config_upstream *sg = config_upstream_find(cfg, "sendgrid");
    assert_non_null(r);
    assert_non_null(sg);
    assert_int_equal(r->port, 2525);
    assert_int_equal(r->tls, CONFIG_TLS_NONE);
    assert_string_equal(sg->host, "smtp.sendgrid.net");
    assert_int_equal(sg->auth, CONFIG_AUTH_PLAIN);
    assert_string_equal(sg->username, "apikey");
    assert_string_equal(sg->secret_env, "SLUICE_SENDGRID_KEY");
    assert_int_equal(sg->max_connections, 4);
    assert_int_equal(sg->port, 587);
    config_free(cfg);

    /* An upstream created only by the environment replaces the embedded one. */
    char *env2[] = {"SLUICE_UPSTREAM_RELAY_HOST=relay.example.com", NULL};
    cfg = load_ok(NULL, env2);
    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].name, "relay");
    assert_false(cfg->upstreams[0].capture);
    config_free(cfg);
}

static void test_env_errors(void **state)
{
    (void)state;
    char *typo[] = {"SLUICE_LIMITS_MAX_MSG_SIZE=10M", NULL};
    expect_error_env(NULL, typo, 0, "SLUICE_LIMITS_MAX_MSG_SIZE: unknown setting");
    char *typo2[] = {"SLUICE_LOGS_LEVEL=debug", NULL};
    expect_error_env(NULL, typo2, 0, "SLUICE_LOGS_LEVEL: unknown setting");
    char *bad[] = {"SLUICE_LIMITS_MAX_RECIPIENTS=lots", NULL};
    expect_error_env(NULL, bad, 0, "SLUICE_LIMITS_MAX_RECIPIENTS: expected an integer");
    char *verify[] = {"SLUICE_UPSTREAM_X_HOST=smtp.example.com", "SLUICE_UPSTREAM_X_VERIFY=none",
                      NULL};
    expect_error_env(NULL, verify, 0,
                     "SLUICE_UPSTREAM_X_VERIFY: upstream 'x': verify = none is allowed only for "
                     "loopback upstreams (127.0.0.0/8, ::1, localhost)");
    char *nohost[] = {"SLUICE_UPSTREAM_X_PORT=25", NULL};
    expect_error_env(NULL, nohost, 0,
                     "SLUICE_UPSTREAM_X_PORT: upstream 'x': kind = smtp needs host");
    char *twice[] = {"SLUICE_TLS_CERT=/a", "SLUICE_TLS_TLS_CERT=/b", NULL};
    expect_error_env(NULL, twice, 0, "set twice in the environment");
}

static void test_syntax_errors(void **state)
{
    (void)state;
    expect_error("[server]\nhostname = a\n[servre]\nx = 1\n", 3, "unknown section [servre]");
    expect_error("[server]\n\n[upstream]\n", 3, "[upstream] needs a name");
    expect_error("[upstream bad.name]\n", 1, "upstream name 'bad.name'");
    expect_error("[server\n", 1, "without ']'");
    expect_error("[server] extra\n", 1, "unexpected text after the section header");
    expect_error("hostname = x\n[server]\n", 1, "before any [section]");
    expect_error("[server]\n\nhostnme = x\n", 3, "unknown key 'hostnme' in [server]");
    expect_error("[server]\nHostname = x\n", 2, "unknown key 'Hostname'");
    expect_error("[upstream a]\nhost = a.example\nprot = 25\n", 3,
                 "unknown key 'prot' in [upstream a]");
    expect_error("[server]\njust some words\n", 2, "expected 'key = value'");
    expect_error("[limits]\nmax_recipients = 5\nmax_recipients = 6\n", 3,
                 "duplicate key 'max_recipients' in [limits] (first set at line 2)");
    expect_error("[tls]\ncert = /a\ntls_cert = /b\n", 3, "duplicate key 'tls_cert'");
    expect_error("[log]\nlevel = info\n[server]\n[log]\n", 4,
                 "section [log] appears twice (first at line 1)");
    expect_error("[upstream a]\nhost = a.example\n[upstream b]\nhost = b.example\n"
                 "[upstream a]\nhost = c.example\n",
                 5, "duplicate upstream 'a' (first at line 1)");
    expect_error("[upstream a-b]\nhost = a.example\n[upstream A_B]\nhost = b.example\n", 3,
                 "share the environment prefix");
    expect_error("[server]\nhostname = x\n    y\n", 3, "which is not a list");

    char line[400];
    snprintf(line, sizeof(line), "[server]\nhostname = %0300d\n", 0);
    expect_error(line, 2, "line longer than");
}

static void test_value_errors(void **state)
{
    (void)state;
    expect_error("[limits]\nmax_recipients = 10x\n", 2,
                 "[limits] max_recipients: expected an integer, got '10x'");
    expect_error("[limits]\n\nmax_message_size = 10Q\n", 3, "expected a size");
    expect_error("[limits]\nmax_message_size = -5\n", 2, "expected a size");
    expect_error("[limits]\nmax_message_size = 0\n", 2, "out of range");
    expect_error("[limits]\ncommand_timeout = 5 minutes\n", 2, "expected a duration");
    expect_error("[limits]\ndata_timeout = -1\n", 2, "expected a duration");
    expect_error("[queue]\nbounces = maybe\n", 2, "expected true/false");
    expect_error("[limits]\nmax_recipients = 0\n", 2, "out of range (1 to 100000)");
    expect_error("[limits]\nmax_line_length = 100\n", 2, "out of range (512 to 65536)");
    expect_error("[limits]\nmax_line_length = 70000\n", 2, "out of range");
    expect_error("[upstream a]\nhost = a.example\nport = 0\n", 3, "out of range (1 to 65535)");
    expect_error("[upstream a]\nhost = a.example\nport = 65536\n", 3, "out of range");
    expect_error("[upstream a]\nhost = a.example\nport = 99999999999999999999\n", 3,
                 "expected an integer");
    expect_error("[server]\nlisten_submission = 127.0.0.1\n", 2, "expected host:port");
    expect_error("[server]\nlisten_submission = 127.0.0.1:0\n", 2, "port must be 1-65535");
    expect_error("[server]\nlisten_submission = 127.0.0.1:70000\n", 2, "port must be 1-65535");
    expect_error("[server]\nlisten_submission = ::1:25\n", 2, "need brackets");
    expect_error("[server]\nlisten_smtps = [::1]465\n", 2, "expected [IPv6]:port");
    expect_error("[server]\nlisten_smtps = [1.2.3.4]:465\n", 2, "not an IPv6 address");
    expect_error("[server]\nlisten_smtps = localhost:465\n", 2, "not an IP address");
    expect_error("[server]\nrelay_networks = 10.0.0.0/33\n", 2, "not a valid CIDR");
    expect_error("[server]\nrelay_networks = 10.0.0.0/8,,\n", 2, "empty entry");
    expect_error("[server]\nrelay_networks = 10.1.2.3/8\n", 2, "bits set beyond the /8 prefix");
    expect_error("[server]\nrelay_networks = 10.0.0.0/8, example.com\n", 2,
                 "'example.com' is not a valid CIDR");
    expect_error("[server]\nhostname = bad_host!\n", 2, "not a valid host name");
    expect_error("[server]\nspool_dir =\n", 2, "must not be empty");
    expect_error("[tls]\nmin_version = 1.1\n", 2, "expected 1.2 or 1.3, got '1.1'");
    expect_error("[log]\nformat = xml\n", 2, "expected json or text");
    expect_error("[log]\nlevel = loud\n", 2, "expected debug, info, warn or error");
    expect_error("[upstream a]\nkind = pigeon\n", 2, "expected smtp or capture");
    expect_error("[upstream a]\nhost = a.example\ntls = ssl\n", 3,
                 "expected starttls, implicit or none");
    expect_error("[upstream a]\nhost = a.example\nrate = fast\n", 3, "expected a rate");
    expect_error("[upstream a]\nhost = a.example\ntls_pin_sha256 = abcd\n", 3,
                 "expected 64 hex digits");
    expect_error("[upstream a]\nhost = [::1]\n", 2, "without brackets");
    expect_error("[upstream a]\nhost = a.example\nsecret_env = 9LIVES\n", 3,
                 "not an environment variable name");
    expect_error("[queue]\nretry_base = 2h\nretry_cap = 1h\n", 2, "exceeds retry_cap");
}

static void test_upstream_rules(void **state)
{
    (void)state;
    expect_error("[upstream relay]\nport = 25\n", 1, "upstream 'relay': kind = smtp needs host");
    expect_error("[upstream relay]\nkind = smtp\nport = 25\n", 2, "kind = smtp needs host");
    expect_error("[upstream relay]\nhost = smtp.example.com\nverify = none\n", 3,
                 "upstream 'relay': verify = none is allowed only for loopback upstreams "
                 "(127.0.0.0/8, ::1, localhost)");
    expect_error("[upstream relay]\nhost = 10.0.0.1\ntls = none\n", 3,
                 "tls = none is allowed only for loopback upstreams");
    expect_error("[upstream relay]\nhost = smtp.example.com\nauth = plain\nsecret_env = K\n", 3,
                 "auth = plain needs username");
    expect_error("[upstream relay]\nhost = smtp.example.com\nauth = xoauth2\nusername = u\n", 3,
                 "auth = xoauth2 needs secret_file or secret_env");
    expect_error("[upstream relay]\nhost = smtp.example.com\nauth = plain\nusername = u\n"
                 "secret_file = /s\nsecret_env = S\n",
                 6, "set only one of secret_file and secret_env");

    /* Loopback upstreams may go without TLS verification. */
    struct config *cfg = load_ok("[upstream a]\nhost = 127.0.0.2\ntls = none\nverify = none\n"
                                 "[upstream b]\nhost = ::1\nverify = none\n"
                                 "[upstream c]\nhost = localhost\ntls = none\n"
                                 "[upstream d]\nkind = capture\n",
                                 NULL);
    assert_int_equal(cfg->n_upstreams, 4);
    assert_true(config_upstream_find(cfg, "d")->capture);
    assert_int_equal(config_upstream_find(cfg, "a")->verify, CONFIG_VERIFY_NONE);
    config_free(cfg);
}

static void test_all_errors_collected(void **state)
{
    (void)state;
    struct config *cfg;
    struct config_errors errs;
    int rc = config_load_string("[server]\n"
                                "hostname = !\n"
                                "bogus = 1\n"
                                "[limits]\n"
                                "max_recipients = 0\n"
                                "[nope]\n"
                                "[upstream x]\n"
                                "host = smtp.example.com\n"
                                "verify = none\n",
                                "f.conf", NULL, &cfg, &errs);
    assert_int_equal(rc, -1);
    assert_int_equal(errs.n, 5);
    int lines[] = {2, 3, 5, 6, 9};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(errs.v[i].file, "f.conf");
        assert_int_equal(errs.v[i].line, lines[i]);
    }
    config_errors_free(&errs);
    config_free(cfg);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct config *cfg = NULL;
    struct config_errors errs;
    assert_int_equal(config_load("/nonexistent/sluice.conf", NULL, &cfg, &errs), -1);
    assert_non_null(cfg);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.v[0].file, "/nonexistent/sluice.conf");
    assert_non_null(strstr(errs.v[0].message, "cannot open"));
    assert_int_equal(cfg->max_recipients, 100);
    config_errors_free(&errs);
    config_free(cfg);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        long long out;
    } good[] = {{"0", 0},           {"1024", 1024},
                {"10K", 10240},     {"10k", 10240},
                {"10KiB", 10240},   {"10KB", 10240},
                {"25M", 26214400},  {"25MiB", 26214400},
                {"1G", 1073741824}, {"2GiB", 2147483648LL},
                {"3 MiB", 3145728}, {"9223372036854775807", 9223372036854775807LL}};
    static const char *const bad[] = {"",
                                      "-1",
                                      "K",
                                      "10X",
                                      "1.5M",
                                      "10 K B",
                                      " 10",
                                      "+10",
                                      "10MiBs",
                                      "0x10",
                                      "9223372036854775808",
                                      "9007199254740993K",
                                      "8589934592G"};
    long long v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(config_parse_size(good[i].in, &v), 0);
        assert_int_equal(v, good[i].out);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(config_parse_size(bad[i], &v), -1);
    assert_int_equal(config_parse_size(NULL, &v), -1);
}

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int out;
    } good[] = {{"90", 90},
                {"0", 0},
                {"30s", 30},
                {"5m", 300},
                {"2h", 7200},
                {"5d", 432000},
                {"2147483647", 2147483647}};
    static const char *const bad[] = {"",     "-5",         "5x",     "5 m", "m",
                                      "1.5h", "2147483648", "24856d", "5M",  "5ms"};
    int v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(config_parse_duration(good[i].in, &v), 0);
        assert_int_equal(v, good[i].out);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(config_parse_duration(bad[i], &v), -1);
}

static void test_dump_round_trip(void **state)
{
    (void)state;
    char *env[] = {"SLUICE_SERVER_RELAY_NETWORKS=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,"
                   "fd00::/8,2001:db8::/32,198.51.100.0/24,203.0.113.0/24",
                   NULL};
    struct config *a = load_ok("[server]\n"
                               "hostname = relay.example.org\n"
                               "listen_smtps =\n"
                               "[limits]\n"
                               "max_message_size = 1000\n"
                               "data_timeout = 90\n"
                               "[upstream zeta]\n"
                               "host = smtp.example.net\n"
                               "priority = 1\n"
                               "auth = plain\n"
                               "username = me@example.org\n"
                               "secret_env = ZETA_PASSWORD\n"
                               "rate = 1/min\n"
                               "[upstream local]\n"
                               "host = ::1\n"
                               "tls = none\n"
                               "verify = none\n"
                               "rate = 2.5/s\n"
                               "[upstream cap]\n"
                               "kind = capture\n"
                               "priority = 99\n",
                               env);
    char *text = dump_to_string(a);
    assert_null(strstr(text, "ZETA_PASSWORD=")); /* names only, never contents */
    struct config *b = load_ok(text, NULL);
    char *again = dump_to_string(b);
    /* Only the first comment line (which names the source) may differ. */
    assert_string_equal(strchr(text, '\n'), strchr(again, '\n'));
    assert_string_equal(b->relay_networks, a->relay_networks);
    assert_int_equal(b->max_message_size, 1000);
    assert_int_equal(b->data_timeout, 90);
    assert_int_equal(b->n_upstreams, 3);
    assert_string_equal(b->upstreams[0].name, "zeta");
    assert_true(b->upstreams[0].rate_per_second == a->upstreams[0].rate_per_second);
    assert_true(b->upstreams[1].rate_per_second == 2.5);
    assert_null(b->upstreams[1].tls_pin_sha256);
    assert_true(b->upstreams[2].capture);
    free(text);
    free(again);
    config_free(a);
    config_free(b);

    /* The embedded defaults dump to a file that loads to the same thing. */
    a = load_ok(NULL, NULL);
    text = dump_to_string(a);
    b = load_ok(text, NULL);
    again = dump_to_string(b);
    assert_string_equal(strchr(text, '\n'), strchr(again, '\n'));
    assert_true(b->upstreams[0].capture);
    free(text);
    free(again);
    config_free(a);
    config_free(b);
}

static void test_json(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[upstream a]\nhost = a.example\n", NULL);
    json_t *j = config_to_json(cfg);
    assert_non_null(j);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "limits"), "max_recipients")), 100);
    json_t *ups = json_object_get(j, "upstreams");
    assert_int_equal(json_array_size(ups), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ups, 0), "name")), "a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ups, 0), "tls")),
                        "starttls");
    assert_true(json_is_null(json_object_get(json_array_get(ups, 0), "username")));
    json_decref(j);
    config_free(cfg);
}

/* A relative path in a file names a place beside the file; the defaults of
 * keys the file leaves out too; the environment stays relative. */
static void test_paths_relative_to_the_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/sluice-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *real = realpath(dir, NULL); /* the loader resolves symlinks of the folder */
    assert_non_null(real);
    char sub[4200], path[4300], want[4400];
    snprintf(sub, sizeof(sub), "%s/etc", real);
    free(real);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof(path), "%s/sluice.conf", sub);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[server]\nvar_dir = ./state\n[dkim]\nkey_dir = keys\n[log]\nfile =\n", f);
    fclose(f);
    struct config *cfg;
    struct config_errors errs;
    assert_int_equal(config_load(path, NULL, &cfg, &errs), 0);
    snprintf(want, sizeof(want), "%s/state", sub);
    assert_string_equal(cfg->var_dir, want);
    snprintf(want, sizeof(want), "%s/state/spool", sub);
    assert_string_equal(cfg->spool_dir, want);
    snprintf(want, sizeof(want), "%s/keys", sub);
    assert_string_equal(cfg->dkim_key_dir, want);
    assert_string_equal(cfg->log_file, ""); /* empty stays empty: stdout */
    config_free(cfg);
    char *env[] = {"SLUICE_SERVER_VAR_DIR=mine", NULL};
    assert_int_equal(config_load(path, env, &cfg, &errs), 0);
    assert_string_equal(cfg->var_dir, "mine");
    assert_string_equal(cfg->spool_dir, "mine/spool");
    config_free(cfg);
    /* no file: the embedded defaults stay relative to the working directory */
    assert_int_equal(config_load(NULL, NULL, &cfg, &errs), 0);
    assert_string_equal(cfg->var_dir, "./var");
    config_free(cfg);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
}

static void test_example_file(void **state)
{
    (void)state;
    const char *root = getenv("SLUICE_SOURCE_ROOT");
    char path[4096];
    struct config *cfg;
    struct config_errors errs;
    snprintf(path, sizeof(path), "%s/etc/sluice.conf.example", root ? root : ".");
    int rc = config_load(path, NULL, &cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s:%d: %s\n", errs.v[i].file, errs.v[i].line, errs.v[i].message);
    assert_int_equal(rc, 0);
    config_errors_free(&errs);
    config_free(cfg);

    /* Every key of the dump appears in the example, set or commented out. */
    char *example = read_source_file("etc/sluice.conf.example");
    cfg = load_ok(NULL, NULL);
    char *dump = dump_to_string(cfg);
    for (char *line = strtok(dump, "\n"); line; line = strtok(NULL, "\n")) {
        char key[64];
        if (sscanf(line, "%63[a-z_0-9] =", key) != 1 || !strstr(line, " ="))
            continue;
        char want[80];
        snprintf(want, sizeof(want), "\n%s =", key);
        char want_commented[80];
        snprintf(want_commented, sizeof(want_commented), "\n# %s =", key);
        if (!strstr(example, want) && !strstr(example, want_commented))
            fail_msg("key '%s' is missing from etc/sluice.conf.example", key);
    }
    free(dump);
    config_free(cfg);

    /* The commented-out settings and upstreams are valid too. */
    char *active = malloc(strlen(example) + 1), *out = active;
    for (const char *line = example; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line + 1) : strlen(line);
        char key[64];
        if (strncmp(line, "# ", 2) == 0 &&
            (line[2] == '[' || (sscanf(line + 2, "%63[a-z_0-9] =", key) == 1 &&
                                strncmp(line + 2 + strlen(key), " =", 2) == 0)))
            line += 2, len -= 2;
        memcpy(out, line, len);
        out += len;
        line += len;
    }
    *out = '\0';
    char *env[] = {"SENDGRID_API_KEY=x", NULL};
    cfg = load_ok(active, env);
    assert_int_equal(cfg->n_upstreams, 3);
    assert_string_equal(cfg->upstreams[0].name, "sendgrid");
    assert_string_equal(cfg->upstreams[1].name, "ses");
    assert_int_equal(cfg->upstreams[1].port, 465);
    assert_true(cfg->upstreams[2].capture);
    assert_string_equal(cfg->hostname, "mail.example.org");
    config_free(cfg);
    free(active);
    free(example);
}

static void test_docs_in_sync(void **state)
{
    (void)state;
    char *doc = read_source_file("docs/CONFIG.md");
    char *table = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&table, &len);
    config_docs(f);
    fclose(f);
    if (!strstr(doc, table))
        fail_msg("docs/CONFIG.md is out of date: paste the output of `sluice config docs`");
    free(table);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),       cmocka_unit_test(test_file_overrides),
        cmocka_unit_test(test_env_overrides),  cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_syntax_errors),  cmocka_unit_test(test_value_errors),
        cmocka_unit_test(test_upstream_rules), cmocka_unit_test(test_all_errors_collected),
        cmocka_unit_test(test_missing_file),   cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration), cmocka_unit_test(test_dump_round_trip),
        cmocka_unit_test(test_json),           cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_docs_in_sync),   cmocka_unit_test(test_paths_relative_to_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
