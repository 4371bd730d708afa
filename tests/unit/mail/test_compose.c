/* The message composer and the address-list reader: header injection is
 * refused with a message naming the field, the MIME tree has the right
 * shape, encodings keep lines within their limits, Bcc stays out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "mail/addrlist.h"
#include "mail/compose.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *build(const struct compose_msg *m, char *err, size_t errlen, int expect)
{
    char *out = NULL;
    size_t len = 0;
    int rc = compose_build(m, &out, &len, err, errlen);
    assert_int_equal(rc, expect);
    if (rc == COMPOSE_OK) {
        assert_non_null(out);
        assert_int_equal(len, strlen(out));
    } else {
        assert_null(out);
        assert_true(err[0] != '\0');
    }
    return out;
}

/* Every line ends in CRLF, none passes max octets, no bare CR or LF. */
static void assert_lines(const char *s, size_t max)
{
    size_t col = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '\r') {
            assert_true(p[1] == '\n');
            p++;
            col = 0;
            continue;
        }
        assert_true(*p != '\n');
        assert_true(++col <= max);
    }
    assert_int_equal(col, 0);
}

static void test_injection_refused(void **state)
{
    (void)state;
    char err[256];
    const char *to[] = {"a@example.org"};
    struct compose_msg m = {
        .from = "me@example.org", .to = to, .nto = 1, .subject = "hi\r\nBcc: victim@example.org"};
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    assert_non_null(strstr(err, "subject"));
    m.subject = "ok";
    const char *bad_to[] = {"a@example.org\nX: y"};
    m.to = bad_to;
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    assert_non_null(strstr(err, "to"));
    m.to = to;
    struct compose_header h = {"X-Ok", "v\rX-Evil: 1"};
    m.headers = &h;
    m.nheaders = 1;
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    assert_non_null(strstr(err, "X-Ok"));
    h = (struct compose_header){"X Bad", "v"};
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    h = (struct compose_header){"Content-Type", "text/html"};
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    m.nheaders = 0;
    struct compose_attachment a = {.filename = "x\r\n.pdf", .data = "x", .len = 1};
    m.attachments = &a;
    m.nattachments = 1;
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    a = (struct compose_attachment){
        .filename = "x.pdf", .content_type = "text/plain; x=\"y\"", .data = "x", .len = 1};
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    a = (struct compose_attachment){.filename = longname, .data = "x", .len = 1};
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    m.nattachments = 0;
    m.from = "a@example.org, b@example.org";
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    assert_non_null(strstr(err, "exactly one"));
    m.from = "not an address";
    build(&m, err, sizeof err, COMPOSE_EINVAL);
    assert_non_null(strstr(err, "from"));
}

static void test_plain_and_bcc(void **state)
{
    (void)state;
    char err[256];
    const char *to[] = {"Ann <ann@example.org>, bob@example.org"}, *bcc[] = {"hidden@example.org"};
    struct compose_msg m = {.from = "Shop <me@shop.example>",
                            .to = to,
                            .nto = 1,
                            .bcc = bcc,
                            .nbcc = 1,
                            .subject = "Order",
                            .text = "line one\nline two\n",
                            .date = 1700000000,
                            .message_id = "id1@shop.example"};
    char *out = build(&m, err, sizeof err, COMPOSE_OK);
    assert_lines(out, 998);
    assert_non_null(strstr(out, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
    assert_non_null(strstr(out, "From: Shop <me@shop.example>\r\n"));
    assert_non_null(strstr(out, "To: Ann <ann@example.org>, bob@example.org\r\n"));
    assert_non_null(strstr(out, "Message-ID: <id1@shop.example>\r\n"));
    assert_non_null(strstr(out, "Content-Transfer-Encoding: 7bit\r\n\r\nline one\r\nline two\r\n"));
    assert_null(strstr(out, "hidden"));
    assert_null(strstr(out, "Bcc"));
    free(out);
    char **r;
    size_t n;
    assert_int_equal(compose_recipients(&m, &r, &n, err, sizeof err), COMPOSE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(r[2], "hidden@example.org");
    compose_recipients_free(r, n);
}

static void test_encodings(void **state)
{
    (void)state;
    char err[256], longline[1200];
    memset(longline, 'x', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    const char *to[] = {"Jürgen Müller <j@example.org>"};
    struct compose_msg m = {.from = "\"Smith, J.\" <me@example.org>",
                            .to = to,
                            .nto = 1,
                            .subject =
                                "Grüße aus Köln — ein sehr langer Betreff, der gefaltet wird",
                            .text = longline,
                            .html = "<p>caf\xc3\xa9 = 1</p>"};
    static const char pdf[] = "%PDF-1.4 \x00\x01\x02\xff binary";
    struct compose_attachment a[2] = {
        {.filename = "Rechnung März.pdf", .data = pdf, .len = sizeof pdf},
        {.filename = "logo.png", .data = "PNG", .len = 3, .content_id = "logo@example.org"}};
    m.attachments = a;
    m.nattachments = 2;
    char *out = build(&m, err, sizeof err, COMPOSE_OK);
    assert_lines(out, 998);
    assert_non_null(strstr(out, "From: \"Smith, J.\" <me@example.org>\r\n"));
    assert_non_null(strstr(out, "To: =?utf-8?B?"));
    assert_non_null(strstr(out, "Subject: =?utf-8?B?"));
    assert_non_null(strstr(out, "multipart/mixed"));
    assert_non_null(strstr(out, "multipart/related"));
    assert_non_null(strstr(out, "multipart/alternative"));
    assert_non_null(strstr(out, "Content-Type: application/pdf"));
    assert_non_null(strstr(out, "filename*0*=utf-8''Rechnung%20M%C3%A4rz.pdf"));
    assert_non_null(strstr(out, "Content-ID: <logo@example.org>"));
    assert_non_null(strstr(out, "caf=C3=A9 =3D 1"));
    assert_non_null(strstr(out, "Content-Transfer-Encoding: quoted-printable"));
    /* the encoded parts keep to 76 columns: every line after the header */
    const char *body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    for (const char *p = body + 4; *p;) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        assert_true(e - p <= 78);
        p = e + 2;
    }
    free(out);
}

static void test_addrlist(void **state)
{
    (void)state;
    struct addrlist l;
    char err[256];
    const char *s =
        "\"Doe, J\" <j@x.example>, team: a@y.example, (c) b@z.example;,\r\n k@w.example";
    assert_int_equal(addrlist_parse(s, strlen(s), &l, err, sizeof err), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.v[0].name, "Doe, J");
    assert_string_equal(l.v[0].addr, "j@x.example");
    assert_string_equal(l.v[2].addr, "b@z.example");
    assert_string_equal(l.v[3].addr, "k@w.example");
    addrlist_free(&l);
    const char *bad[] = {"John Smith",
                         "<a@b.example",
                         "a@b.example\nBcc: x@y",
                         "<@r:a@b.example>",
                         "\"unterminated <a@b.example>",
                         "a@"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(addrlist_parse(bad[i], strlen(bad[i]), &l, err, sizeof err), -1);
        assert_true(err[0] != '\0');
        assert_int_equal(l.n, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_injection_refused),
        cmocka_unit_test(test_plain_and_bcc),
        cmocka_unit_test(test_encodings),
        cmocka_unit_test(test_addrlist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
