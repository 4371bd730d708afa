/* JSON message -> MIME text. Every value was checked by api_request.c (no
 * control octets in header values, header names are ftext), so this file
 * only encodes and folds: lines stay within 78 octets where a space allows
 * and never pass 998 (RFC 5322 2.1.1). */
#include "httpd/api_mime.h"

#include "core/base64.h"
#include "httpd/api_request.h"
#include "mail/address.h"

#include <openssl/rand.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct out {
    char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct out *o, const void *s, size_t n)
{
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *g = realloc(o->p, cap);
        if (!g) {
            o->oom = true;
            return;
        }
        o->p = g;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void putf(struct out *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(o, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* A header field made of words: folded before a word that would pass 78
 * octets on its line. Words never hold spaces the folding could break. */
struct field {
    struct out *o;
    size_t col;
};

static void field_start(struct field *f, struct out *o, const char *name)
{
    f->o = o;
    puts_(o, name);
    puts_(o, ":");
    f->col = strlen(name) + 1;
}

static void field_word(struct field *f, const char *w, size_t n, bool space_before)
{
    if (space_before && f->col + 1 + n > 78 && f->col > 1) {
        puts_(f->o, "\r\n");
        f->col = 0;
    }
    if (space_before) {
        puts_(f->o, " ");
        f->col++;
    }
    put(f->o, w, n);
    f->col += n;
}

static void field_end(struct field *f)
{
    puts_(f->o, "\r\n");
}

/* RFC 2047 encoded words, "B" encoding, each under 75 octets, cut at UTF-8
 * character starts. */
static void field_encoded(struct field *f, const char *s)
{
    size_t n = strlen(s);
    bool first = true;
    while (n) {
        size_t take = n < 45 ? n : 45;
        while (take < n && take > 1 && ((unsigned char)s[take] & 0xC0) == 0x80)
            take--;
        char b64[BASE64_ENCODED_SIZE(45) + 16], word[96];
        base64_encode(s, take, b64);
        int wl = snprintf(word, sizeof word, "=?UTF-8?B?%s?=", b64);
        field_word(f, word, (size_t)wl, !first || f->col > 0);
        first = false;
        s += take;
        n -= take;
    }
}

/* Unstructured text (Subject, extra fields): words as they are when ASCII,
 * encoded words otherwise. */
static void field_text(struct field *f, const char *s)
{
    if (!is_ascii(s)) {
        field_encoded(f, s);
        return;
    }
    bool any = false;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        size_t n = strcspn(s, " \t");
        /* a word longer than a line is written as it is: below 998 anyway */
        field_word(f, s, n, true);
        any = true;
        s += n;
    }
    if (!any)
        field_word(f, "", 0, true);
}

/* RFC 5322 3.2.3 atext plus space: a display name that needs no quotes. */
static bool plain_phrase(const char *s)
{
    for (; *s; s++)
        if (!(*s == ' ' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-/=?^_`{|}~", *s)))
            return false;
    return true;
}

static void field_mailbox(struct field *f, const struct api_addr *a, bool comma)
{
    if (a->name) {
        if (!is_ascii(a->name)) {
            field_encoded(f, a->name);
        } else if (plain_phrase(a->name)) {
            field_text(f, a->name);
        } else {
            /* a quoted-string (RFC 5322 3.2.4): backslash before " and \ */
            struct out q = {0};
            puts_(&q, "\"");
            for (const char *p = a->name; *p; p++) {
                if (*p == '"' || *p == '\\')
                    puts_(&q, "\\");
                put(&q, p, 1);
            }
            puts_(&q, "\"");
            if (q.oom)
                f->o->oom = true;
            else
                field_word(f, q.p, q.len, true);
            free(q.p);
        }
    }
    char buf[SMTP_PATH_MAX + 4];
    int n = snprintf(buf, sizeof buf, a->name ? "<%s>%s" : "%s%s", a->email, comma ? "," : "");
    field_word(f, buf, (size_t)n, true);
}

static void field_mailboxes(struct out *o, const char *name, const struct api_addr *v, size_t n)
{
    if (!n)
        return;
    struct field f;
    field_start(&f, o, name);
    for (size_t i = 0; i < n; i++)
        field_mailbox(&f, &v[i], i + 1 < n);
    field_end(&f);
}

/* Text as 7bit when it is ASCII with short lines, base64 otherwise; line
 * ends become CRLF either way. */
static void put_text_part(struct out *o, const char *type, const char *text)
{
    struct out t = {0};
    size_t line = 0, longest = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '\r' && p[1] == '\n')
            continue;
        if (*p == '\r' || *p == '\n') {
            puts_(&t, "\r\n");
            longest = line > longest ? line : longest;
            line = 0;
        } else {
            put(&t, p, 1);
            line++;
        }
    }
    longest = line > longest ? line : longest;
    if (t.oom) {
        o->oom = true;
        free(t.p);
        return;
    }
    bool seven = is_ascii(text) && longest <= 998;
    putf(o, "Content-Type: %s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n", type,
         seven ? "7bit" : "base64");
    if (seven) {
        put(o, t.p ? t.p : "", t.len);
        if (t.len < 2 || memcmp(t.p + t.len - 2, "\r\n", 2) != 0)
            puts_(o, "\r\n");
    } else {
        for (size_t i = 0; i < t.len; i += 57) {
            char b64[BASE64_ENCODED_SIZE(57)];
            size_t n = base64_encode(t.p + i, t.len - i < 57 ? t.len - i : 57, b64);
            put(o, b64, n);
            puts_(o, "\r\n");
        }
    }
    free(t.p);
}

static void put_attachment(struct out *o, const struct api_attachment *a)
{
    struct field f;
    field_start(&f, o, "Content-Type");
    char word[600];
    int n = snprintf(word, sizeof word, "%s;",
                     a->content_type ? a->content_type : "application/octet-stream");
    field_word(&f, word, (size_t)n, true);
    /* RFC 2231 would be the standard for non-ASCII names; the encoded word
     * in a quoted name is what mail programs read in practice */
    if (is_ascii(a->filename)) {
        n = snprintf(word, sizeof word, "name=\"%s\"", a->filename);
        field_word(&f, word, (size_t)n, true);
    }
    field_end(&f);
    puts_(o, "Content-Transfer-Encoding: base64\r\n");
    field_start(&f, o, "Content-Disposition");
    n = snprintf(word, sizeof word, "%s;", a->content_id ? "inline" : "attachment");
    field_word(&f, word, (size_t)n, true);
    if (is_ascii(a->filename)) {
        n = snprintf(word, sizeof word, "filename=\"%s\"", a->filename);
        field_word(&f, word, (size_t)n, true);
    } else {
        field_word(&f, "filename=\"", 10, true);
        field_encoded(&f, a->filename);
        field_word(&f, "\"", 1, false);
    }
    field_end(&f);
    if (a->content_id)
        putf(o, "Content-ID: <%s>\r\n", a->content_id);
    puts_(o, "\r\n");
    for (size_t i = 0; i < a->len; i += 57) {
        char b64[BASE64_ENCODED_SIZE(57)];
        size_t k = base64_encode(a->data + i, a->len - i < 57 ? a->len - i : 57, b64);
        put(o, b64, k);
        puts_(o, "\r\n");
    }
}

static void boundary(char out[40], int level)
{
    unsigned char r[12];
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, level, sizeof r);
    int n = snprintf(out, 40, "=_%d_", level);
    for (size_t i = 0; i < sizeof r; i++)
        n += snprintf(out + n, 40 - (size_t)n, "%02x", r[i]);
}

/* The text/html part, or both as multipart/alternative. */
static void put_body(struct out *o, const struct api_message *m)
{
    if (m->text && m->html) {
        char b[40];
        boundary(b, 1);
        putf(o, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", b);
        putf(o, "--%s\r\n", b);
        put_text_part(o, "text/plain", m->text);
        putf(o, "--%s\r\n", b);
        put_text_part(o, "text/html", m->html);
        putf(o, "--%s--\r\n", b);
    } else {
        put_text_part(o, m->html ? "text/html" : "text/plain", m->html ? m->html : m->text);
    }
}

static void put_related(struct out *o, const struct api_message *m, size_t n_inline)
{
    if (!n_inline) {
        put_body(o, m);
        return;
    }
    char b[40];
    boundary(b, 2);
    putf(o, "Content-Type: multipart/related; boundary=\"%s\"\r\n\r\n--%s\r\n", b, b);
    put_body(o, m);
    for (size_t i = 0; i < m->n_att; i++)
        if (m->att[i].content_id) {
            putf(o, "--%s\r\n", b);
            put_attachment(o, &m->att[i]);
        }
    putf(o, "--%s--\r\n", b);
}

int api_mime_build(const struct api_message *m, char **out, size_t *outlen, char *err,
                   size_t errlen)
{
    struct out o = {0};
    field_mailboxes(&o, "From", &m->from, 1);
    field_mailboxes(&o, "To", m->to, m->n_to);
    field_mailboxes(&o, "Cc", m->cc, m->n_cc);
    field_mailboxes(&o, "Reply-To", m->reply_to, m->n_reply_to);
    if (m->subject) {
        struct field f;
        field_start(&f, &o, "Subject");
        field_text(&f, m->subject);
        field_end(&f);
    }
    for (size_t i = 0; i < m->n_headers; i++) {
        struct field f;
        field_start(&f, &o, m->headers[i].name);
        field_text(&f, m->headers[i].value);
        field_end(&f);
    }
    puts_(&o, "MIME-Version: 1.0\r\n");
    size_t n_inline = 0, n_attached = 0;
    for (size_t i = 0; i < m->n_att; i++)
        if (m->att[i].content_id && m->html)
            n_inline++;
        else
            n_attached++;
    if (!n_attached) {
        put_related(&o, m, n_inline);
    } else {
        char b[40];
        boundary(b, 3);
        putf(&o, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n--%s\r\n", b, b);
        put_related(&o, m, n_inline);
        for (size_t i = 0; i < m->n_att; i++)
            if (!(m->att[i].content_id && m->html)) {
                putf(&o, "--%s\r\n", b);
                put_attachment(&o, &m->att[i]);
            }
        putf(&o, "--%s--\r\n", b);
    }
    if (o.oom) {
        free(o.p);
        snprintf(err, errlen, "out of memory building the message");
        return -1;
    }
    *out = o.p;
    *outlen = o.len;
    return 0;
}
