/* Unit tests for policy/authz: every rule allows what it should and refuses
 * the rest with the exact reply (basic and enhanced code, the rule named)
 * and the reason counted in metrics; sender and recipient patterns for
 * credentials and relay clients, routing tricks, rates, quotas with their
 * reset time, sizes, header From/Sender alignment, required headers and
 * blocked attachments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "policy/accounting.h"
#include "policy/authz.h"
#include "policy/creds.h"
#include "policy/ratelimit.h"
#include "mail/address.h"

static struct config *load(const char *text)
{
    struct config *cfg = NULL;
    struct config_errors errs = {0};
    char *envp[] = {NULL};
    assert_int_equal(config_load_string(text, "test.conf", envp, &cfg, &errs), 0);
    config_errors_free(&errs);
    return cfg;
}

static struct config *default_cfg(void)
{
    return load("[server]\nvar_dir = /tmp/sluice-authz-unused\n");
}

/* The credential "shop" as the store would hand it out. */
static struct cred *shop(void)
{
    static char *from[] = {"*@shop.example", "*@*.shop.example"};
    static char *rcpt[] = {"*@team.example"};
    struct cred *c = calloc(1, sizeof *c);
    c->id = 7;
    c->name = "shop";
    c->allow_from = from;
    c->n_allow_from = 2;
    c->allow_rcpt = rcpt;
    c->n_allow_rcpt = 0;
    return c;
}

static struct smtp_path mail_path(const char *arg)
{
    struct smtp_path p;
    struct smtp_mail_params mp;
    assert_int_equal(smtp_parse_mail(arg, strlen(arg), &p, &mp), SMTP_ADDR_OK);
    return p;
}

static struct smtp_path rcpt_path(const char *arg)
{
    struct smtp_path p;
    struct smtp_rcpt_params rp;
    assert_int_equal(smtp_parse_rcpt(arg, strlen(arg), false, &p, &rp), SMTP_ADDR_OK);
    return p;
}

static void test_sender_patterns(void **state)
{
    (void)state;
    struct config *cfg = default_cfg();
    struct cred *c = shop();
    struct authz_refusal r;
    struct smtp_path ok = mail_path("FROM:<orders@shop.example>");
    struct smtp_path sub = mail_path("FROM:<a@eu.shop.example>");
    struct smtp_path bad = mail_path("FROM:<x@evil.test>");
    struct smtp_path null = mail_path("FROM:<>");
    assert_int_equal(authz_mail(c, cfg, &ok, 0, &r), 0);
    assert_int_equal(authz_mail(c, cfg, &sub, 0, &r), 0);
    assert_int_equal(authz_mail(c, cfg, &bad, 0, &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_SENDER);
    assert_string_equal(r.reply, "550 5.7.1 Sender <x@evil.test> not allowed for credential "
                                 "'shop' (allowed: *@shop.example, *@*.shop.example)");
    /* a restricted credential cannot send with a null reverse-path */
    assert_int_equal(authz_mail(c, cfg, &null, 0, &r), AUTHZ_REFUSED);
    /* no patterns: any sender */
    c->n_allow_from = 0;
    assert_int_equal(authz_mail(c, cfg, &bad, 0, &r), 0);
    free(c);
    config_free(cfg);
}

static void test_revoked_and_declared_size(void **state)
{
    (void)state;
    struct config *cfg = default_cfg();
    struct cred *c = shop();
    struct authz_refusal r;
    struct smtp_path ok = mail_path("FROM:<orders@shop.example>");
    c->max_size = 1000;
    assert_int_equal(authz_mail(c, cfg, &ok, 1000, &r), 0);
    assert_int_equal(authz_mail(c, cfg, &ok, 1001, &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_SIZE);
    assert_string_equal(r.reply,
                        "552 5.3.4 Message size 1001 exceeds the credential's limit of 1000 bytes");
    assert_int_equal(authz_size_limit(c, cfg), 1000);
    assert_int_equal(authz_size(c, cfg, 1000, &r), 0);
    assert_int_equal(authz_size(c, cfg, 1001, &r), AUTHZ_REFUSED);
    assert_string_equal(r.reply, "552 5.3.4 Message size exceeds the credential's limit of 1000 "
                                 "bytes");
    /* a credential limit above the relay's does not raise it */
    c->max_size = cfg->max_message_size * 2;
    assert_int_equal(authz_size_limit(c, cfg), cfg->max_message_size);
    assert_int_equal(authz_size_limit(NULL, cfg), cfg->max_message_size);
    c->revoked = true;
    assert_int_equal(authz_mail(c, cfg, &ok, 0, &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_UNAUTHENTICATED);
    assert_memory_equal(r.reply, "530 5.7.0", 9);
    free(c);
    config_free(cfg);
}

static void test_relay_client_patterns(void **state)
{
    (void)state;
    struct config *cfg = load("[server]\nvar_dir = /tmp/x\n[policy]\n"
                              "relay_allow_from = *@app.example, billing@corp.example\n"
                              "relay_allow_rcpt = *@corp.example\n");
    struct authz_refusal r;
    struct smtp_path a = mail_path("FROM:<x@app.example>");
    struct smtp_path b = mail_path("FROM:<billing@corp.example>");
    struct smtp_path bad = mail_path("FROM:<sales@corp.example>");
    assert_int_equal(authz_mail(NULL, cfg, &a, 0, &r), 0);
    assert_int_equal(authz_mail(NULL, cfg, &b, 0, &r), 0);
    assert_int_equal(authz_mail(NULL, cfg, &bad, 0, &r), AUTHZ_REFUSED);
    assert_string_equal(r.reply, "550 5.7.1 Sender <sales@corp.example> not allowed for "
                                 "unauthenticated relay clients (allowed: *@app.example, "
                                 "billing@corp.example)");
    struct smtp_path in = rcpt_path("TO:<ann@corp.example>");
    struct smtp_path out = rcpt_path("TO:<ann@elsewhere.example>");
    assert_int_equal(authz_rcpt(NULL, cfg, &in, &r), 0);
    assert_int_equal(authz_rcpt(NULL, cfg, &out, &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_RECIPIENT);
    assert_string_equal(r.reply, "550 5.7.1 Recipient not allowed for unauthenticated relay "
                                 "clients (allowed: *@corp.example)");
    /* the header From domains follow relay_allow_from too */
    const char *msg = "From: x@other.example\r\n\r\nhi\r\n";
    assert_int_equal(authz_headers(NULL, cfg, msg, strlen(msg), &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_HEADER_FROM);
    config_free(cfg);
}

static void test_recipient_rules(void **state)
{
    (void)state;
    struct config *cfg = default_cfg();
    struct cred *c = shop();
    struct authz_refusal r;
    struct smtp_path team = rcpt_path("TO:<dev@team.example>");
    struct smtp_path world = rcpt_path("TO:<someone@example.net>");
    assert_int_equal(authz_rcpt(c, cfg, &world, &r), 0); /* no allow_rcpt: any */
    c->n_allow_rcpt = 1;                                 /* staging: the team only */
    assert_int_equal(authz_rcpt(c, cfg, &team, &r), 0);
    assert_int_equal(authz_rcpt(c, cfg, &world, &r), AUTHZ_REFUSED);
    assert_string_equal(r.reply, "550 5.7.1 Recipient not allowed for credential 'shop' "
                                 "(allowed: *@team.example)");
    /* routing through the relay is refused for everyone, even when the
     * pattern would match the final domain */
    c->n_allow_rcpt = 0;
    const char *tricks[] = {"TO:<user%other.example@team.example>",
                            "TO:<\"a@b.example\"@team.example>", "TO:<\"a%b\"@team.example>",
                            "TO:<host!user@team.example>"};
    for (size_t i = 0; i < sizeof tricks / sizeof tricks[0]; i++) {
        struct smtp_path p = rcpt_path(tricks[i]);
        assert_int_equal(authz_rcpt(c, cfg, &p, &r), AUTHZ_REFUSED);
        assert_int_equal(r.reason, REJECT_RECIPIENT);
        assert_memory_equal(r.reply, "550 5.7.1 ", 10);
        assert_non_null(strstr(r.reply, "route through this relay"));
        assert_int_equal(authz_rcpt(NULL, cfg, &p, &r), AUTHZ_REFUSED);
    }
    struct smtp_path pct = rcpt_path("TO:<user%other.example@team.example>");
    authz_rcpt(c, cfg, &pct, &r);
    assert_non_null(strstr(r.reply, "percent hack"));
    /* a quoted local part without routing characters is fine */
    struct smtp_path quoted = rcpt_path("TO:<\"john smith\"@team.example>");
    assert_int_equal(authz_rcpt(c, cfg, &quoted, &r), 0);
    free(c);
    config_free(cfg);
}

static void test_rates(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(64, NULL);
    struct cred *c = shop();
    struct authz_refusal r;
    c->rate = (struct cred_limit){2, CRED_PER_MINUTE};
    uint64_t t = 1000000;
    assert_int_equal(authz_rate(rl, c, "192.0.2.1", "0", t, &r), 0);
    assert_int_equal(authz_rate(rl, c, "192.0.2.2", "0", t, &r), 0);
    assert_int_equal(authz_rate(rl, c, "192.0.2.3", "0", t, &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_RATE);
    assert_string_equal(r.reply, "450 4.7.1 Rate limit of 2/min for credential 'shop' exceeded; "
                                 "try again in 30 s");
    /* half a minute later one message is allowed again */
    assert_int_equal(authz_rate(rl, c, "192.0.2.3", "0", t + 30000, &r), 0);
    /* per source address, for relay clients and credentials alike */
    assert_int_equal(authz_rate(rl, NULL, "198.51.100.7", "1/h", t, &r), 0);
    assert_int_equal(authz_rate(rl, NULL, "198.51.100.7", "1/h", t + 1000, &r), AUTHZ_REFUSED);
    assert_memory_equal(r.reply, "450 4.7.1 Rate limit of 1/h", 27);
    assert_non_null(strstr(r.reply, "address '198.51.100.7'"));
    assert_int_equal(authz_rate(rl, NULL, "198.51.100.8", "1/h", t + 1000, &r), 0);
    assert_int_equal(authz_rate(rl, NULL, "198.51.100.7", "", t + 2000, &r), 0);
    assert_int_equal(authz_rate(NULL, c, "198.51.100.7", "1/h", t, &r), 0);
    ratelimit_free(rl);
    free(c);
}

static void test_quota(void **state)
{
    (void)state;
    char dir[] = "/tmp/sluice-authz-XXXXXX", path[64], err[256] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/sluice.db", dir);
    struct accounting *a = accounting_open(path, err, sizeof err);
    assert_non_null(a);
    struct cred *c = shop();
    struct authz_refusal r;
    time_t now = 1795737600 + 3600;                  /* 2026-11-27 01:00 UTC */
    assert_int_equal(authz_quota(a, c, now, &r), 0); /* no quota */
    c->quota = (struct cred_limit){2, CRED_PER_DAY};
    assert_int_equal(authz_quota(a, c, now, &r), 0);
    accounting_add_at(a, "shop", ACCT_ACCEPTED, NULL, 10, now);
    assert_int_equal(authz_quota(a, c, now, &r), 0);
    accounting_add_at(a, "shop", ACCT_ACCEPTED, NULL, 10, now);
    assert_int_equal(authz_quota(a, c, now, &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_QUOTA);
    assert_string_equal(r.reply, "452 4.7.1 Daily quota of 2 messages for credential 'shop' "
                                 "reached; resets at 2026-11-28T00:00:00Z");
    /* the next UTC day starts afresh */
    assert_int_equal(authz_quota(a, c, now + 86400, &r), 0);
    c->quota = (struct cred_limit){2, CRED_PER_MONTH};
    assert_int_equal(authz_quota(a, c, now, &r), AUTHZ_REFUSED);
    assert_string_equal(r.reply, "452 4.7.1 Monthly quota of 2 messages for credential 'shop' "
                                 "reached; resets at 2026-12-01T00:00:00Z");
    /* December rolls over into January */
    accounting_add_at(a, "shop", ACCT_ACCEPTED, NULL, 10, 1796083200 + 10 * 86400);
    accounting_add_at(a, "shop", ACCT_ACCEPTED, NULL, 10, 1796083200 + 10 * 86400);
    assert_int_equal(authz_quota(a, c, 1796083200 + 20 * 86400, &r), AUTHZ_REFUSED);
    assert_non_null(strstr(r.reply, "resets at 2027-01-01T00:00:00Z"));
    assert_int_equal(authz_quota(NULL, c, now, &r), 0);
    assert_int_equal(authz_quota(a, NULL, now, &r), 0);
    accounting_close(a);
    free(c);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int headers(const struct cred *c, const struct config *cfg, const char *msg,
                   struct authz_refusal *r)
{
    return authz_headers(c, cfg, msg, strlen(msg), r);
}

static void test_header_from_and_sender(void **state)
{
    (void)state;
    struct config *cfg = default_cfg();
    struct cred *c = shop();
    struct authz_refusal r;
    assert_int_equal(headers(c, cfg, "From: Shop <orders@shop.example>\r\n\r\nx\r\n", &r), 0);
    assert_int_equal(
        headers(c, cfg, "From: a@EU.Shop.Example\r\nSender: b@shop.example\r\n\r\n", &r), 0);
    assert_int_equal(headers(c, cfg, "From: Shop <orders@evil.test>\r\n\r\nx\r\n", &r),
                     AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_HEADER_FROM);
    assert_string_equal(r.reply,
                        "550 5.7.1 Header From domain evil.test not allowed for credential 'shop'");
    /* a display name that looks like an allowed address changes nothing */
    assert_int_equal(headers(c, cfg, "From: \"a@shop.example\" <x@evil.test>\r\n\r\n", &r),
                     AUTHZ_REFUSED);
    /* every mailbox counts, and every From field */
    assert_int_equal(headers(c, cfg, "From: a@shop.example, b@evil.test\r\n\r\n", &r),
                     AUTHZ_REFUSED);
    assert_int_equal(headers(c, cfg, "From: a@shop.example\r\nFrom: b@evil.test\r\n\r\n", &r),
                     AUTHZ_REFUSED);
    assert_int_equal(
        headers(c, cfg, "From: a@shop.example\r\nSender: relay@evil.test\r\n\r\nx\r\n", &r),
        AUTHZ_REFUSED);
    assert_string_equal(r.reply, "550 5.7.1 Header Sender domain evil.test not allowed for "
                                 "credential 'shop'");
    assert_int_equal(headers(c, cfg, "From: nobody\r\n\r\n", &r), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_HEADER_FROM);
    /* From in the body is not a header */
    assert_int_equal(headers(c, cfg, "From: a@shop.example\r\n\r\nFrom: b@evil.test\r\n", &r), 0);
    /* without patterns the domains are not checked */
    c->n_allow_from = 0;
    assert_int_equal(headers(c, cfg, "From: x@evil.test\r\n\r\n", &r), 0);
    free(c);
    config_free(cfg);
}

static void test_required_headers(void **state)
{
    (void)state;
    struct config *cfg = default_cfg(); /* required_headers = From */
    struct authz_refusal r;
    assert_int_equal(headers(NULL, cfg, "Subject: hi\r\n\r\nFrom: a@b.example\r\n", &r),
                     AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_CONTENT);
    assert_string_equal(r.reply, "550 5.6.0 Missing required header: From");
    config_free(cfg);
    cfg = load("[server]\nvar_dir = /tmp/x\n[policy]\nrequired_headers = From, Subject\n");
    assert_int_equal(headers(NULL, cfg, "from: a@b.example\r\nSUBJECT: x\r\n\r\n", &r), 0);
    assert_int_equal(headers(NULL, cfg, "From: a@b.example\r\n\r\n", &r), AUTHZ_REFUSED);
    assert_string_equal(r.reply, "550 5.6.0 Missing required header: Subject");
    config_free(cfg);
    cfg = load("[server]\nvar_dir = /tmp/x\n[policy]\nrequired_headers =\n");
    assert_int_equal(headers(NULL, cfg, "X: y\r\n\r\n", &r), 0);
    config_free(cfg);
}

static const char attachment_msg[] = "From: a@shop.example\r\n"
                                     "MIME-Version: 1.0\r\n"
                                     "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
                                     "\r\n"
                                     "--b1\r\n"
                                     "Content-Type: text/plain\r\n"
                                     "\r\n"
                                     "See attached.\r\n"
                                     "--b1\r\n"
                                     "Content-Type: application/pdf; name=\"%s\"\r\n"
                                     "Content-Disposition: attachment; filename=\"%s\"\r\n"
                                     "Content-Transfer-Encoding: base64\r\n"
                                     "\r\n"
                                     "JVBERi0xLjQK\r\n"
                                     "--b1--\r\n";

static void test_content_policy(void **state)
{
    (void)state;
    struct config *cfg = default_cfg();
    struct authz_refusal r;
    struct authz_attachments atts;
    char msg[2048];
    snprintf(msg, sizeof msg, attachment_msg, "invoice.pdf", "invoice.pdf");
    assert_int_equal(authz_content(cfg, msg, strlen(msg), &r, &atts), 0);
    assert_int_equal(atts.n, 1);
    assert_string_equal(atts.v[0], "invoice.pdf;application/pdf;12");
    authz_attachments_free(&atts);
    assert_null(atts.v);
    snprintf(msg, sizeof msg, attachment_msg, "invoice.pdf.exe", "invoice.pdf.exe");
    assert_int_equal(authz_content(cfg, msg, strlen(msg), &r, &atts), AUTHZ_REFUSED);
    assert_int_equal(r.reason, REJECT_CONTENT);
    assert_string_equal(r.reply, "554 5.7.1 Message refused: attachment 'invoice.pdf.exe' has a "
                                 "blocked extension .exe (double extension .pdf.exe)");
    assert_int_equal(atts.n, 0);
    /* a ';' in a name cannot fake another field; non-ASCII stays out of replies */
    snprintf(msg, sizeof msg, attachment_msg, "a;b.txt", "a;b.txt");
    assert_int_equal(authz_content(cfg, msg, strlen(msg), &r, &atts), 0);
    assert_string_equal(atts.v[0], "a_b.txt;application/pdf;12");
    authz_attachments_free(&atts);
    snprintf(msg, sizeof msg, attachment_msg, "=?utf-8?q?caf=C3=A9.exe?=", "x.bin");
    assert_int_equal(authz_content(cfg, msg, strlen(msg), &r, NULL), AUTHZ_REFUSED);
    for (const char *p = r.reply; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    /* without blocked extensions the same message passes */
    config_free(cfg);
    cfg = load("[server]\nvar_dir = /tmp/x\n[policy]\nblocked_extensions =\n");
    snprintf(msg, sizeof msg, attachment_msg, "invoice.pdf.exe", "invoice.pdf.exe");
    assert_int_equal(authz_content(cfg, msg, strlen(msg), &r, NULL), 0);
    /* a plain message has no attachments */
    const char *plain = "From: a@b.example\r\n\r\nhello\r\n";
    assert_int_equal(authz_content(cfg, plain, strlen(plain), &r, &atts), 0);
    assert_int_equal(atts.n, 0);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sender_patterns),
        cmocka_unit_test(test_revoked_and_declared_size),
        cmocka_unit_test(test_relay_client_patterns),
        cmocka_unit_test(test_recipient_rules),
        cmocka_unit_test(test_rates),
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_header_from_and_sender),
        cmocka_unit_test(test_required_headers),
        cmocka_unit_test(test_content_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
