/* Unit tests for policy/mime: the MIME walk over messages shaped like real
 * mail (nested mixed/alternative, RFC 2231 and RFC 2047 file names, missing
 * close delimiters, quoted boundaries, attached messages), the hard limits,
 * the attachment policy and the header lookup and the address parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/mime.h"

#define BLOCKED_EXTS "exe,js,vbs,scr,bat,cmd,com,jar"

static int scan(const char *msg, struct mime_report *r)
{
    return mime_scan(msg, strlen(msg), r);
}

static const char nested[] =
    "Received: from app.shop.example by relay; Tue, 2 Jan 2024 10:00:00 +0000\r\n"
    "From: \"Shop, Inc.\" <orders@Shop.Example>\r\n"
    "To: customer@example.net\r\n"
    "Subject: Your order\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed;\r\n"
    "\tboundary=\"----=_Part_0_12.34\"\r\n"
    "\r\n"
    "This is a multi-part message in MIME format.\r\n"
    "------=_Part_0_12.34\r\n"
    "Content-Type: multipart/alternative; boundary=alt\r\n"
    "\r\n"
    "--alt\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello\r\n"
    "--alt\r\n"
    "Content-Type: TEXT/HTML; charset=utf-8\r\n"
    "Content-Transfer-Encoding: Quoted-Printable\r\n"
    "\r\n"
    "<p>Hello=20there</p>\r\n"
    "--alt--\r\n"
    "\r\n"
    "------=_Part_0_12.34\r\n"
    "Content-Type: application/pdf; name=\"invoice.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQK\r\n"
    "------=_Part_0_12.34--\r\n"
    "epilogue\r\n";

static void test_nested(void **state)
{
    (void)state;
    struct mime_report r;
    char why[256];

    assert_int_equal(scan(nested, &r), 0);
    assert_int_equal(r.count, 3);
    assert_int_equal(r.multiparts, 2);
    assert_int_equal(r.max_depth, 2);
    assert_int_equal(r.flags, 0);

    assert_string_equal(r.parts[0].content_type, "text/plain");
    assert_string_equal(r.parts[0].path, "1.1");
    assert_int_equal(r.parts[0].depth, 2);
    assert_int_equal(r.parts[0].size, 5);
    assert_memory_equal(nested + r.parts[0].offset, "Hello", 5);
    assert_string_equal(r.parts[0].encoding, "7bit");

    assert_string_equal(r.parts[1].content_type, "text/html");
    assert_string_equal(r.parts[1].encoding, "quoted-printable");
    assert_string_equal(r.parts[1].path, "1.2");
    assert_int_equal(r.parts[1].magic_len, 8);
    assert_memory_equal(r.parts[1].magic, "<p>Hello", 8);

    assert_string_equal(r.parts[2].content_type, "application/pdf");
    assert_string_equal(r.parts[2].disposition, "attachment");
    assert_string_equal(r.parts[2].filename, "invoice.pdf");
    assert_string_equal(r.parts[2].name, "invoice.pdf");
    assert_string_equal(r.parts[2].encoding, "base64");
    assert_string_equal(r.parts[2].path, "2");
    assert_int_equal(r.parts[2].depth, 1);
    assert_int_equal(r.parts[2].size, 12);
    assert_int_equal(r.parts[2].magic_len, 8);
    assert_memory_equal(r.parts[2].magic, "%PDF-1.4", 8);

    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, "application/x-msdownload", why, sizeof(why)),
                     0);
    assert_string_equal(why, "");
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, "application/pdf", why, sizeof(why)), 1);
    assert_non_null(strstr(why, "application/pdf"));
    /* "text/" followed by an asterisk: every text type. */
    assert_int_equal(mime_blocked(&r, NULL, "image/*, text/*", why, sizeof(why)), 1);
    assert_non_null(strstr(why, "part 1.1"));
    assert_int_equal(mime_blocked(&r, NULL, "image/*,tex/*", why, sizeof(why)), 0);
    mime_report_free(&r);

    /* The same message with bare LF line ends gives the same tree. */
    char *lf = strdup(nested);
    char *w = lf;
    for (const char *p = nested; *p; p++)
        if (*p != '\r')
            *w++ = *p;
    *w = '\0';
    assert_int_equal(scan(lf, &r), 0);
    assert_int_equal(r.count, 3);
    assert_int_equal(r.parts[0].size, 5);
    assert_string_equal(r.parts[2].filename, "invoice.pdf");
    assert_int_equal(r.parts[2].size, 12);
    mime_report_free(&r);
    free(lf);
}

static void test_rfc2231_names(void **state)
{
    (void)state;
    static const char msg[] =
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b 1:x\"\r\n"
        "\r\n"
        "--b 1:x\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Disposition: attachment;\r\n"
        " filename*1*=%20for%20;\r\n"
        " filename*0*=utf-8'en'%E2%82%AC%20rates;\r\n"
        " filename*2=\"2024.txt\"\r\n"
        "\r\n"
        "rates\r\n"
        "--b 1:x\r\n"
        "Content-Type: application/pdf; name*=iso-8859-1''r%E9sum%E9.pdf\r\n"
        "\r\n"
        "x\r\n"
        "--b 1:x\r\n"
        "Content-Type: message/external-body; access-type=URL;\r\n"
        "  title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A; name=plain.txt;\r\n"
        "  name*=windows-1252''%93q%94.txt\r\n"
        "\r\n"
        "--b 1:x--\r\n";
    struct mime_report r;

    assert_int_equal(scan(msg, &r), 0);
    assert_int_equal(r.count, 3);
    assert_string_equal(r.parts[0].filename, "\xe2\x82\xac rates for 2024.txt");
    assert_string_equal(r.parts[0].name, "");
    assert_string_equal(r.parts[1].name, "r\xc3\xa9sum\xc3\xa9.pdf");
    /* The RFC 2231 form wins over the plain one; Windows-1252 quotes. */
    assert_string_equal(r.parts[2].name, "\xe2\x80\x9cq\xe2\x80\x9d.txt");
    assert_int_equal(r.parts[2].size, 0);
    assert_int_equal(r.flags, 0);
    mime_report_free(&r);
    /* UTF-16 through iconv (an extension hidden from byte-wise checks), and
     * a charset name with punctuation iconv would ignore. */
    static const char u16[] = "Content-Disposition: attachment;\r\n"
                              " filename*=utf-16be''%00a%00.%00e%00x%00e\r\n\r\nx";
    assert_int_equal(scan(u16, &r), 0);
    assert_string_equal(r.parts[0].filename, "a.exe");
    mime_report_free(&r);
    static const char odd[] = "Content-Disposition: attachment;\r\n"
                              " filename*=utf!8''a%F8%8C%8C%8C%8Cb.txt\r\n\r\nx";
    assert_int_equal(scan(odd, &r), 0);
    assert_string_equal(r.parts[0].filename, "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                             "\xef\xbf\xbd"
                                             "b.txt");
    assert_true(r.parts[0].flags & MIME_PF_NAME_UNDECODED);
    mime_report_free(&r);
}

static void test_encoded_word_names(void **state)
{
    (void)state;
    static const char msg[] =
        "Content-Type: multipart/mixed; boundary=X\n"
        "\n"
        "--X\n"
        "Content-Type: application/octet-stream; name=\"=?UTF-8?B?0YHRh9C10YIuZXhl?=\"\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "AAAA\n"
        "--X\n"
        "Content-Type: application/pdf\n"
        "Content-Disposition: attachment; filename=\"=?iso-8859-1?Q?r=E9sum=E9_final.pdf?=\"\n"
        "\n"
        "x\n"
        "--X\n"
        "Content-Disposition: attachment;\n"
        "  filename=\"=?utf-8?q?in?= =?utf-8?q?voice.pdf?= (copy).exe\"\n"
        "\n"
        "x\n"
        "--X\n"
        "Content-Disposition: attachment; filename=\"=?x-unknown-cs?q?a=FFb.txt?=\"\n"
        "\n"
        "--X\n"
        "Content-Disposition: attachment; filename=\"=?shift_jis?B?gqCCoi50eHQ=?=\"\n"
        "\n"
        "--X--\n";
    struct mime_report r;
    char why[256];

    assert_int_equal(scan(msg, &r), 0);
    assert_int_equal(r.count, 5);
    assert_string_equal(r.parts[0].name, "\xd1\x81\xd1\x87\xd0\xb5\xd1\x82.exe");
    assert_string_equal(r.parts[1].filename, "r\xc3\xa9sum\xc3\xa9 final.pdf");
    assert_string_equal(r.parts[2].filename, "invoice.pdf (copy).exe");
    assert_string_equal(r.parts[2].content_type, "text/plain"); /* the default */
    assert_string_equal(r.parts[3].filename, "a\xef\xbf\xbd"
                                             "b.txt");
    assert_true(r.parts[3].flags & MIME_PF_NAME_UNDECODED);
    /* Shift_JIS through iconv: "あい.txt". */
    assert_string_equal(r.parts[4].filename, "\xe3\x81\x82\xe3\x81\x84.txt");
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    assert_non_null(strstr(why, ".exe"));
    assert_non_null(strstr(why, "\xd1\x81\xd1\x87"));
    mime_report_free(&r);
}

static void test_missing_close_and_oddities(void **state)
{
    (void)state;
    static const char msg[] = "Content-Type: multipart/mixed; boundary=\"=_abc\"\r\n"
                              "\r\n"
                              "--=_abc\r\n"
                              "Content-Type: text/plain\r\n"
                              "\r\n"
                              "see attached\r\n"
                              "--=_abcd\r\n"   /* not our delimiter: longer */
                              " --=_abc\r\n"   /* not at line start */
                              "--=_abc   \r\n" /* transport padding is allowed */
                              "Content-Type: application/octet-stream\r\n"
                              "Content-Disposition: attachment; filename=setup.EXE\r\n"
                              "Content-Transfer-Encoding: base64\r\n"
                              "\r\n"
                              "TVqQAAMAAAAEAAAA\r\n";
    struct mime_report r;
    char why[256];

    assert_int_equal(scan(msg, &r), 0);
    assert_int_equal(r.count, 2);
    assert_true(r.flags & MIME_F_MISSING_CLOSE);
    assert_string_equal(r.parts[0].content_type, "text/plain");
    assert_int_equal(r.parts[0].size, strlen("see attached\r\n--=_abcd\r\n --=_abc"));
    assert_string_equal(r.parts[1].filename, "setup.EXE");
    assert_int_equal(r.parts[1].size, strlen("TVqQAAMAAAAEAAAA\r\n"));
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    assert_string_equal(why, "attachment 'setup.EXE' has a blocked extension .EXE");
    mime_report_free(&r);

    /* A multipart without boundary, one without any delimiter, duplicate
     * Content-Type, a header line that is not a field. */
    static const char nob[] = "Content-Type: multipart/mixed\r\n\r\nbody\r\n";
    assert_int_equal(scan(nob, &r), 0);
    assert_int_equal(r.count, 1);
    assert_true(r.flags & MIME_F_NO_BOUNDARY);
    mime_report_free(&r);
    static const char nodelim[] = "Content-Type: multipart/mixed; boundary=q\r\n\r\nbody\r\n";
    assert_int_equal(scan(nodelim, &r), 0);
    assert_int_equal(r.count, 1);
    assert_true(r.flags & MIME_F_NO_PARTS);
    mime_report_free(&r);
    static const char dup[] = "Content-Type: text/plain\r\n"
                              "Content-Type: application/x-msdownload\r\n"
                              "not a header line\r\n"
                              "\r\nbody\r\n";
    assert_int_equal(scan(dup, &r), 0);
    assert_int_equal(r.count, 1);
    assert_string_equal(r.parts[0].content_type, "text/plain");
    assert_true(r.flags & MIME_F_DUPLICATE_FIELD);
    assert_true(r.flags & MIME_F_BAD_HEADER);
    mime_report_free(&r);
    static const char badct[] = "Content-Type: ;;;\r\n\r\nx";
    assert_int_equal(scan(badct, &r), 0);
    assert_string_equal(r.parts[0].content_type, "text/plain");
    assert_true(r.flags & MIME_F_BAD_CONTENT_TYPE);
    mime_report_free(&r);
    /* Empty input and a header only. */
    assert_int_equal(mime_scan("", 0, &r), 0);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.parts[0].size, 0);
    mime_report_free(&r);
}

static void test_plain_and_attached_message(void **state)
{
    (void)state;
    static const char plain[] = "From: a@b.example\r\nSubject: hi\r\n\r\nJust text.\r\n";
    struct mime_report r;
    char why[128];

    assert_int_equal(scan(plain, &r), 0);
    assert_int_equal(r.count, 1);
    assert_string_equal(r.parts[0].content_type, "text/plain");
    assert_string_equal(r.parts[0].path, "1");
    assert_int_equal(r.parts[0].depth, 0);
    assert_int_equal(r.parts[0].size, strlen("Just text.\r\n"));
    mime_report_free(&r);

    static const char fwd[] = "Content-Type: multipart/mixed; boundary=o\r\n"
                              "\r\n"
                              "--o\r\n"
                              "\r\n"
                              "FYI\r\n"
                              "--o\r\n"
                              "Content-Type: message/rfc822\r\n"
                              "\r\n"
                              "From: x@y.example\r\n"
                              "Content-Type: multipart/mixed; boundary=i\r\n"
                              "\r\n"
                              "--i\r\n"
                              "Content-Type: application/javascript\r\n"
                              "Content-Disposition: attachment; filename=\"run.js\"\r\n"
                              "\r\n"
                              "alert(1)\r\n"
                              "--i--\r\n"
                              "--o--\r\n";
    assert_int_equal(scan(fwd, &r), 0);
    assert_int_equal(r.count, 2);
    assert_string_equal(r.parts[0].content_type, "text/plain"); /* part without header */
    assert_int_equal(r.parts[0].size, 3);
    assert_string_equal(r.parts[1].filename, "run.js");
    assert_string_equal(r.parts[1].path, "2.1");
    assert_int_equal(r.parts[1].depth, 3);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    mime_report_free(&r);

    /* multipart/digest parts default to message/rfc822 and are walked. */
    static const char digest[] = "Content-Type: multipart/digest; boundary=d\r\n\r\n"
                                 "--d\r\n\r\nSubject: one\r\n\r\nbody one\r\n"
                                 "--d--\r\n";
    assert_int_equal(scan(digest, &r), 0);
    assert_int_equal(r.count, 1);
    assert_string_equal(r.parts[0].content_type, "text/plain");
    assert_int_equal(r.parts[0].depth, 2);
    assert_int_equal(r.parts[0].size, strlen("body one"));
    mime_report_free(&r);
}

/* Builds n nested multiparts (each with one child). */
static char *deep_message(int n)
{
    size_t cap = (size_t)n * 120 + 100, o = 0;
    char *m = malloc(cap);
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(m + o, cap - o,
                              "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
    o += (size_t)snprintf(m + o, cap - o, "Content-Type: text/plain\r\n\r\ndeep\r\n");
    return m;
}

static void test_limits(void **state)
{
    (void)state;
    struct mime_report r;
    char why[128];

    char *m = deep_message(10);
    assert_int_equal(scan(m, &r), 0);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.parts[0].depth, 10);
    assert_true(r.flags & MIME_F_MISSING_CLOSE);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 0);
    mime_report_free(&r);
    free(m);

    m = deep_message(5000);
    assert_int_equal(scan(m, &r), MIME_ETOOCOMPLEX);
    assert_true(r.flags & MIME_F_TOO_COMPLEX);
    assert_int_equal(r.count, 0);
    assert_int_equal(r.max_depth, MIME_DEFAULT_MAX_DEPTH);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    assert_string_equal(why, "message structure too complex to inspect");
    mime_report_free(&r);
    free(m);

    /* Many parts. */
    size_t cap = 1000 * 40 + 100, o = 0;
    m = malloc(cap);
    o += (size_t)snprintf(m + o, cap - o, "Content-Type: multipart/mixed; boundary=p\r\n\r\n");
    for (int i = 0; i < 1000; i++)
        o += (size_t)snprintf(m + o, cap - o, "--p\r\n\r\npart %d\r\n", i);
    snprintf(m + o, cap - o, "--p--\r\n");
    assert_int_equal(scan(m, &r), MIME_ETOOCOMPLEX);
    assert_int_equal(r.count, MIME_DEFAULT_MAX_PARTS - 1);
    mime_report_free(&r);
    struct mime_limits lim = {.max_depth = 3, .max_parts = 2000};
    assert_int_equal(mime_scan_limits(m, strlen(m), &lim, &r), 0);
    assert_int_equal(r.count, 1000);
    assert_memory_equal(m + r.parts[999].offset, "part 999", 8);
    mime_report_free(&r);
    free(m);
}

struct name_case {
    const char *filename;
    int blocked;
    const char *why_has;
};

static void test_blocked_names(void **state)
{
    (void)state;
    static const struct name_case cases[] = {
        {"invoice.pdf", 0, NULL},
        {"photo.JPG", 0, NULL},
        {"invoice.pdf.exe", 1, "double extension .pdf.exe"},
        {"invoice.pdf      .exe", 1, "double extension"},
        {"report.exe.", 1, ".exe"},
        {"report.Exe  ", 1, ".Exe"},
        {"archive.tar.gz", 0, NULL},
        {"script.vbs", 1, ".vbs"},
        {"tool.jar", 1, ".jar"},
        {"exe", 0, NULL},
        {".exe", 1, ".exe"},
        {"a.exe%00.pdf", 1, ".exe"}, /* RFC 2231 NUL: cut here by some readers */
        {"a.exe%0D%0A.pdf", 1, ".exe"},
        {"photo%E2%80%AEfdp.txt", 1, "right-to-left"},
        {"notes.executable", 0, NULL},
        {"x.comx", 0, NULL},
    };
    char msg[512], why[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mime_report r;
        snprintf(msg, sizeof(msg),
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Disposition: attachment; filename*=utf-8''%s\r\n\r\ndata\r\n",
                 cases[i].filename);
        assert_int_equal(scan(msg, &r), 0);
        int b = mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why));
        if (b != cases[i].blocked || (cases[i].why_has && !strstr(why, cases[i].why_has)))
            fail_msg("'%s': blocked %d, why '%s'", cases[i].filename, b, why);
        mime_report_free(&r);
    }

    /* Executable content under a harmless name and type. */
    static const char mz[] = "Content-Type: application/pdf; name=\"statement.pdf\"\r\n"
                             "Content-Transfer-Encoding: base64\r\n\r\n"
                             "TVqQAAMA\r\nAAAEAAAA\r\n";
    struct mime_report r;
    assert_int_equal(scan(mz, &r), 0);
    assert_memory_equal(r.parts[0].magic, "MZ\x90\x00", 4);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    assert_non_null(strstr(why, "Windows executable"));
    assert_non_null(strstr(why, "statement.pdf"));
    assert_int_equal(mime_blocked(&r, "js", NULL, why, sizeof(why)), 0);
    mime_report_free(&r);
    /* Text that merely starts with "MZ" is text. */
    static const char mztext[] = "Content-Type: text/plain\r\n\r\nMZ is a postcode prefix.\r\n";
    assert_int_equal(scan(mztext, &r), 0);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 0);
    mime_report_free(&r);
    /* Disposition says pdf, Content-Type name says exe: both are checked. */
    static const char two[] = "Content-Type: application/pdf; name=\"a.scr\"\r\n"
                              "Content-Disposition: attachment; filename=\"a.pdf\"\r\n\r\nx";
    assert_int_equal(scan(two, &r), 0);
    assert_true(r.parts[0].flags & MIME_PF_NAME_MISMATCH);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    assert_non_null(strstr(why, "a.scr"));
    mime_report_free(&r);
}

static void test_long_name_keeps_extension(void **state)
{
    (void)state;
    char msg[2048], why[512];
    int o = snprintf(msg, sizeof(msg), "Content-Disposition: attachment; filename=\"");
    for (int i = 0; i < 600; i++)
        msg[o++] = (char)('a' + i % 26);
    snprintf(msg + o, sizeof(msg) - (size_t)o, ".pdf.exe\"\r\n\r\nx");
    struct mime_report r;
    assert_int_equal(scan(msg, &r), 0);
    assert_true(r.parts[0].flags & MIME_PF_NAME_TRUNCATED);
    assert_true(strlen(r.parts[0].filename) < MIME_NAME_MAX);
    assert_non_null(strstr(r.parts[0].filename, "\xe2\x80\xa6"));
    size_t n = strlen(r.parts[0].filename);
    assert_string_equal(r.parts[0].filename + n - 8, ".pdf.exe");
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    mime_report_free(&r);
}

/* Tricks that would push a name out of sight: many parameters, a gap in
 * RFC 2231 sections, a huge field, a boundary that looks like an
 * encoded-word. */
static void test_evasion(void **state)
{
    (void)state;
    struct mime_report r;
    char why[512];
    size_t cap = 64 * 1024, o = 0;
    char *m = malloc(cap);

    o += (size_t)snprintf(m + o, cap - o, "Content-Disposition: attachment");
    for (int i = 0; i < 200; i++)
        o += (size_t)snprintf(m + o, cap - o, "; x%d=y", i);
    snprintf(m + o, cap - o, "; filename=run.exe\r\n\r\nx");
    assert_int_equal(scan(m, &r), MIME_ETOOCOMPLEX);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    mime_report_free(&r);

    o = (size_t)snprintf(m, cap, "Content-Disposition: attachment; filename=\"");
    for (int i = 0; i < 20000; i++)
        m[o++] = 'a';
    snprintf(m + o, cap - o, ".exe\"\r\n\r\nx");
    assert_int_equal(scan(m, &r), 0);
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    mime_report_free(&r);
    free(m);

    static const char gap[] = "Content-Disposition: attachment; filename*0=\"a.pdf\";\r\n"
                              " filename*2=\".exe\"\r\n\r\nx";
    assert_int_equal(scan(gap, &r), 0);
    assert_string_equal(r.parts[0].filename, "a.pdf.exe");
    assert_int_equal(mime_blocked(&r, BLOCKED_EXTS, NULL, why, sizeof(why)), 1);
    mime_report_free(&r);
    static const char dup[] = "Content-Disposition: attachment; filename*0=\"a.pdf\";\r\n"
                              " filename*0=\"a.exe\"\r\n\r\nx";
    assert_int_equal(scan(dup, &r), MIME_ETOOCOMPLEX);
    mime_report_free(&r);

    static const char ewb[] = "Content-Type: multipart/mixed; boundary=\"=?utf-8?q?x?=\"\r\n\r\n"
                              "--=?utf-8?q?x?=\r\n\r\none\r\n--=?utf-8?q?x?=--\r\n";
    assert_int_equal(scan(ewb, &r), 0);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.parts[0].size, 3);
    assert_int_equal(r.flags, 0);
    mime_report_free(&r);
}

static void test_header_get(void **state)
{
    (void)state;
    static const char msg[] = "Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                              "received: from c by d\r\n"
                              "Subject:   Folded\r\n   subject line  \r\n"
                              "From : Someone <s@x.example>\r\n"
                              "Empty:\r\n"
                              "\r\n"
                              "X-In-Body: no\r\n";
    char out[128];
    size_t len = strlen(msg);

    assert_int_equal(mime_header_get(msg, len, "Received", 0, out, sizeof(out)), 2);
    assert_string_equal(out, "from a\tby b; Mon, 1 Jan 2024 00:00:00 +0000");
    assert_int_equal(mime_header_get(msg, len, "RECEIVED", 1, out, sizeof(out)), 2);
    assert_string_equal(out, "from c by d");
    assert_int_equal(mime_header_get(msg, len, "Received", 2, out, sizeof(out)), 2);
    assert_string_equal(out, "");
    assert_int_equal(mime_header_get(msg, len, "subject", 0, out, sizeof(out)), 1);
    assert_string_equal(out, "Folded   subject line");
    assert_int_equal(mime_header_get(msg, len, "From", 0, out, sizeof(out)), 1);
    assert_string_equal(out, "Someone <s@x.example>");
    assert_int_equal(mime_header_get(msg, len, "Empty", 0, out, sizeof(out)), 1);
    assert_string_equal(out, "");
    assert_int_equal(mime_header_get(msg, len, "X-In-Body", 0, out, sizeof(out)), 0);
    assert_int_equal(mime_header_get(msg, len, "Sender", 0, out, sizeof(out)), 0);
    assert_int_equal(mime_header_get(msg, len, "Subject", 0, out, 6), -1);
    assert_string_equal(out, "Folde");
}

struct addr_case {
    const char *value;
    int count;
    const char *first;
    int author; /* mime_author_domain result */
};

static void test_addresses(void **state)
{
    (void)state;
    static const struct addr_case cases[] = {
        {"\"Shop, Inc.\" <orders@Shop.Example>", 1, "shop.example", 0},
        {"orders@shop.example", 1, "shop.example", 0},
        /* RFC 5322 appendix A.5 */
        {"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", 1, "silly.test", 0},
        {"A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n"
         "         joe@example.org,\r\n  John <jdoe@one.test> (my dear friend); (the end of the "
         "group)",
         3, "public.example", -2},
        {"Undisclosed recipients:;", 0, NULL, -1},
        {"\"Joe Q. Public\" <john.q.public@example.com>", 1, "example.com", 0},
        {"Joe Q. Public <john.q.public@example.com>", 1, "example.com", 0},
        {"Mary Smith <@node.test,@node2.test:mary@example.net>", 1, "example.net", 0},
        {"\"ceo@bank.example\" <x@evil.example>", 1, "evil.example", 0},
        /* RFC 2047 5(3): '@' may not appear in an encoded-word in a phrase, so
         * this display name is an addr-spec followed by text: not an address */
        {"=?utf-8?q?ceo@bank.example?= <x@evil.example>", -1, NULL, -1},
        {"=?utf-8?q?ceo_bank?= <x@evil.example>", 1, "evil.example", 0},
        /* a comment is not an address, wherever it stands */
        {"victim@bank.example (attacker@evil.example)", 1, "bank.example", 0},
        {"victim@bank.example (x <attacker@evil.example>)", 1, "bank.example", 0},
        {"(attacker@evil.example) victim@bank.example", 1, "bank.example", 0},
        /* an unquoted '@' in a display name, or a second '@', is not RFC 5322 */
        {"attacker@evil.example <victim@bank.example>", -1, NULL, -1},
        {"victim@bank.example <attacker@evil.example>", -1, NULL, -1},
        {"<victim@bank.example@evil.example>", -1, NULL, -1},
        {"<attacker@evil.example:victim@bank.example>", -1, NULL, -1},
        {"victim@bank.example@evil.example", -1, NULL, -1},
        {"@bank.example", -1, NULL, -1},
        {"a b@bank.example", -1, NULL, -1},
        {"a..b@bank.example", -1, NULL, -1},
        {".a@bank.example", -1, NULL, -1},
        {"a@bank..example", -1, NULL, -1},
        {"a@.bank.example", -1, NULL, -1},
        {"a@bank.example..", -1, NULL, -1},
        /* obsolete forms: CFWS around dots, quoted words in the local part */
        {"john . q . public @ example . com", 1, "example.com", 0},
        {"\"john\".\"q\"@example.com", 1, "example.com", 0},
        {"<@a.example,,@b.example:x@c.example>", 1, "c.example", 0},
        {"<,@a.example:x@c.example>", 1, "c.example", 0},
        {"<@a.example:>", -1, NULL, -1},
        {"Joe Q. Public <@:x@c.example>", -1, NULL, -1},
        {"g: a@b.example, (c) ,c@b.example;", 2, "b.example", 0},
        {"g: h: a@b.example;;", -1, NULL, -1},
        {": a@b.example;", -1, NULL, -1},
        {"a@b.example, g: c@d.example;", 2, "b.example", -2},
        {"a@b.example > x", -1, NULL, -1},
        {"user@[192.0.2.1]", 1, "[192.0.2.1]", 0},
        {"user@[ 192.0.2.1\r\n ]", 1, "[192.0.2.1]", 0},
        {"user@[192.0\x01.2.1]", -1, NULL, -1},
        {"user@[192.0.\\\x01.1]", -1, NULL, -1}, /* a quoted control byte */
        {"user@[192.0.\\].1]", 1, "[192.0.\\].1]", 0},
        {"a@b.example, c@B.Example", 2, "b.example", 0},
        {"a@b.example, c@d.example", 2, "b.example", -2},
        {"\"a@b\"@example.com", 1, "example.com", 0},
        {"john.q.public@example.com.", 1, "example.com", 0},
        {"a@b.example,, ,c@b.example", 2, "b.example", 0},
        {"j\xc3\xb6rg@b\xc3\xbc\x63her.example", 1, "b\xc3\xbc\x63her.example", 0},
        {"", 0, NULL, -1},
        {"\"unterminated <a@b.example>", -1, NULL, -1},
        {"<a@b.example", -1, NULL, -1},
        {"a@", -1, NULL, -1},
        {"(comment a@b.example", -1, NULL, -1},
        {"plain-name", -1, NULL, -1},
        {"a@b@c.example", -1, NULL, -1},
        {"<a@b.example> trailing", -1, NULL, -1},
        {"a@b c.example", -1, NULL, -1},
        {"a@\"b.example\"", -1, NULL, -1},
        {"<>", -1, NULL, -1},
        {"g: a@b.example", -1, NULL, -1},
        {"a@b.example;", -1, NULL, -1},
        {"a@b.example)", -1, NULL, -1},
        {"a@[1.2.3.4", -1, NULL, -1},
        {"a@b\x01.example", -1, NULL, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mime_address_list l;
        char dom[MIME_DOMAIN_MAX];
        const char *v = cases[i].value;
        int n = mime_address_domains(v, strlen(v), &l);
        if (n != cases[i].count)
            fail_msg("'%s': %d mailboxes, want %d", v, n, cases[i].count);
        if (cases[i].first != NULL)
            assert_string_equal(l.domains[0], cases[i].first);
        int a = mime_author_domain(v, strlen(v), dom, sizeof(dom));
        if (a != cases[i].author)
            fail_msg("'%s': author %d, want %d", v, a, cases[i].author);
        if (a == 0)
            assert_string_equal(dom, cases[i].first);
    }
    /* The length bounds the parse. */
    struct mime_address_list l;
    static const char nul_in_literal[] = "user@[192.0.\\\0.1]";
    assert_int_equal(mime_address_domains(nul_in_literal, sizeof(nul_in_literal) - 1, &l), -1);
    assert_int_equal(mime_address_domains("a@b.example, c@d.example", 11, &l), 1);
    assert_string_equal(l.domains[0], "b.example");
    char small[4];
    assert_int_equal(mime_author_domain("a@b.example", 11, small, sizeof(small)), -1);
}

/* The Author Domains of a whole message (RFC 7489 6.6.1). */
static void test_from_domains(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        int rc;
        const char *first, *second;
    } cases[] = {
        {"From: victim@bank.example (attacker@evil.example)\r\n\r\n", 1, "bank.example", NULL},
        {"from : \"Bank\"\r\n <Victim@Bank.Example>\r\nTo: a@b.example\r\n\r\n", 1, "bank.example",
         NULL},
        {"From: a@x.example, b@X.example\r\n\r\n", 1, "x.example", NULL},
        {"From: a@x.example, b@y.example, c@x.example\r\n\r\n", 2, "x.example", "y.example"},
        {"From: a@x.example\r\nFrom: b@x.example\r\n\r\n", MIME_FROM_SEVERAL, NULL, NULL},
        {"To: a@x.example\r\n\r\nFrom: b@x.example\r\n", MIME_FROM_NONE, NULL, NULL},
        {"From: Undisclosed:;\r\n\r\n", MIME_FROM_INVALID, NULL, NULL},
        {"From: a@[192.0.2.1]\r\n\r\n", MIME_FROM_INVALID, NULL, NULL},
        {"From: attacker@evil.example <victim@bank.example>\r\n\r\n", MIME_FROM_INVALID, NULL,
         NULL},
        {"From: \r\n\r\n", MIME_FROM_INVALID, NULL, NULL},
        {"From: a@x.example\n\n", 1, "x.example", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mime_address_list l;
        int rc = mime_from_domains(cases[i].msg, strlen(cases[i].msg), &l);
        if (rc != cases[i].rc)
            fail_msg("'%s': %d, want %d", cases[i].msg, rc, cases[i].rc);
        if (cases[i].first)
            assert_string_equal(l.domains[0], cases[i].first);
        if (cases[i].second)
            assert_string_equal(l.domains[1], cases[i].second);
    }
    /* A NUL in the field ends nothing early: the bytes after it still count. */
    static const char nul[] = "From: a@x.example\0, b@y.example\r\n\r\n";
    struct mime_address_list l;
    assert_int_equal(mime_from_domains(nul, sizeof(nul) - 1, &l), MIME_FROM_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_from_domains),
        cmocka_unit_test(test_rfc2231_names),
        cmocka_unit_test(test_encoded_word_names),
        cmocka_unit_test(test_missing_close_and_oddities),
        cmocka_unit_test(test_plain_and_attached_message),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_blocked_names),
        cmocka_unit_test(test_long_name_keeps_extension),
        cmocka_unit_test(test_evasion),
        cmocka_unit_test(test_header_get),
        cmocka_unit_test(test_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
