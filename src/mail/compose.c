/* The message composer (compose.h): checks every part a caller gives, then
 * writes the header block and the MIME tree. Values are checked before any
 * output, so a refused message never leaves a half-built buffer behind; the
 * encoders live in compose_encode.c. */
#include "mail/compose.h"
#include "mail/compose_int.h"

#include "mail/addrlist.h"
#include "mail/address.h"

#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 5322 2.1.1 */
#define LINE_HARD 998

struct ctx {
    const struct compose_msg *m;
    struct cbuf out;
    char *err;
    size_t errlen;
    char boundary_seed[25];
    int nboundary;
};

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return COMPOSE_EINVAL;
}

/* A value bound for a header: no control octets (header injection), UTF-8. */
static int check_value(const char *what, const char *s, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (!compose_check_value(s, n))
        return fail(err, errlen,
                    "%s: contains a CR, LF or other control octet (refused: it could inject "
                    "header fields)",
                    what);
    if (!smtp_utf8_valid(s, n))
        return fail(err, errlen, "%s: not valid UTF-8", what);
    return COMPOSE_OK;
}

static bool ftext_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 76)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 || s[i] == ':')
            return false;
    return true;
}

/* RFC 2045 5.1 token: printable ASCII without tspecials. */
static bool mime_token(const char *s, size_t n)
{
    if (n == 0 || n > 127)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 32 || (unsigned char)s[i] >= 127 ||
            strchr("()<>@,;:\\\"/[]?=", s[i]))
            return false;
    return true;
}

static bool content_type_ok(const char *t)
{
    const char *slash = strchr(t, '/');
    return slash && mime_token(t, (size_t)(slash - t)) && mime_token(slash + 1, strlen(slash + 1));
}

/* Content-ID and Message-ID: dot-atom-text "@" dot-atom-text, ASCII. */
static bool msg_id_ok(const char *s)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || !at[1] || strchr(at + 1, '@') || strlen(s) > 250)
        return false;
    for (const char *p = s; *p; p++)
        if (*p != '@' && *p != '.' && !(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
            !(*p >= '0' && *p <= '9') && !strchr("!#$%&'*+-/=?^_`{|}~", *p))
            return false;
    return true;
}

static const char *const owned_fields[] = {
    "From",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Content-ID",
};

static int check_list(const char *what, const char *const *v, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (!v[i])
            return fail(err, errlen, "%s: element %zu is missing", what, i + 1);
        int rc = check_value(what, v[i], err, errlen);
        if (rc)
            return rc;
        struct addrlist l;
        char why[256];
        if (addrlist_parse(v[i], strlen(v[i]), &l, why, sizeof why) != 0)
            return fail(err, errlen, "%s: %s", what, why);
        size_t got = l.n;
        addrlist_free(&l);
        if (got == 0)
            return fail(err, errlen, "%s: no address in '%s'", what, v[i]);
    }
    return COMPOSE_OK;
}

static int check_msg(const struct compose_msg *m, char *err, size_t errlen)
{
    int rc;
    if (!m->from || !*m->from)
        return fail(err, errlen, "from: required");
    const char *one = m->from;
    char addr[SMTP_PATH_MAX + 1];
    if ((rc = check_list("from", &one, 1, err, errlen)) ||
        (rc = compose_sender(m, addr, sizeof addr, err, errlen)))
        return rc;
    if (m->reply_to && (rc = check_list("reply_to", &m->reply_to, 1, err, errlen)))
        return rc;
    if ((rc = check_list("to", m->to, m->nto, err, errlen)) ||
        (rc = check_list("cc", m->cc, m->ncc, err, errlen)) ||
        (rc = check_list("bcc", m->bcc, m->nbcc, err, errlen)))
        return rc;
    if (m->subject && (rc = check_value("subject", m->subject, err, errlen)))
        return rc;
    if (m->text && !smtp_utf8_valid(m->text, strlen(m->text)))
        return fail(err, errlen, "text: not valid UTF-8");
    if (m->html && !smtp_utf8_valid(m->html, strlen(m->html)))
        return fail(err, errlen, "html: not valid UTF-8");
    if (m->message_id && !msg_id_ok(m->message_id))
        return fail(err, errlen,
                    "message_id: '%.100s' is not local@domain in plain ASCII "
                    "(give it without <>)",
                    m->message_id);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct compose_header *h = &m->headers[i];
        if (!h->name || !ftext_name(h->name))
            return fail(err, errlen,
                        "header %zu: the name must be 1-76 printable ASCII octets without ':' "
                        "or space",
                        i + 1);
        for (size_t k = 0; k < sizeof owned_fields / sizeof owned_fields[0]; k++)
            if (strcasecmp(h->name, owned_fields[k]) == 0)
                return fail(err, errlen, "header %s: written by the composer; use its own field",
                            h->name);
        char what[100];
        snprintf(what, sizeof what, "header %s", h->name);
        if (!h->value)
            return fail(err, errlen, "%s: no value", what);
        if ((rc = check_value(what, h->value, err, errlen)))
            return rc;
    }
    for (size_t i = 0; i < m->nattachments; i++) {
        const struct compose_attachment *a = &m->attachments[i];
        char what[64];
        snprintf(what, sizeof what, "attachment %zu filename", i + 1);
        if (!a->filename || !*a->filename)
            return fail(err, errlen, "%s: required", what);
        if ((rc = check_value(what, a->filename, err, errlen)))
            return rc;
        if (strlen(a->filename) > COMPOSE_FILENAME_MAX)
            return fail(err, errlen, "%s: longer than %d octets", what, COMPOSE_FILENAME_MAX);
        if (a->content_type && !content_type_ok(a->content_type))
            return fail(err, errlen, "attachment %zu content_type: '%.100s' is not type/subtype",
                        i + 1, a->content_type);
        if (a->content_id && !msg_id_ok(a->content_id))
            return fail(err, errlen,
                        "attachment %zu content_id: '%.100s' is not local@domain in plain ASCII",
                        i + 1, a->content_id);
        if (a->len && !a->data)
            return fail(err, errlen, "attachment %zu: no data", i + 1);
    }
    return COMPOSE_OK;
}

/* Writes "Name: mailbox, mailbox" from the given elements (already checked).
 * Returns -1 when a line would pass 998 octets. */
static int mailbox_field(struct ctx *c, const char *name, const char *const *v, size_t n)
{
    struct cbuf val = {0};
    for (size_t i = 0; i < n; i++) {
        struct addrlist l;
        if (addrlist_parse(v[i], strlen(v[i]), &l, NULL, 0) != 0)
            continue;
        for (size_t k = 0; k < l.n; k++) {
            if (val.len)
                cbuf_add(&val, ", ", 2);
            if (l.v[k].name[0]) {
                compose_display_name(&val, l.v[k].name);
                cbuf_fmt(&val, " <%s>", l.v[k].addr);
            } else {
                cbuf_str(&val, l.v[k].addr);
            }
        }
        addrlist_free(&l);
    }
    int rc = 0;
    if (val.oom)
        c->out.oom = true;
    else if (val.len)
        rc = compose_field(&c->out, name, val.p, val.len);
    free(val.p);
    if (rc)
        fail(c->err, c->errlen, "%s: a word longer than %d octets", name, LINE_HARD);
    return rc ? COMPOSE_EINVAL : COMPOSE_OK;
}

static void date_field(struct ctx *c)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = c->m->date ? c->m->date : time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    cbuf_fmt(&c->out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void random_hex(char *out, size_t nbytes)
{
    unsigned char r[32];
    if (nbytes > sizeof r)
        nbytes = sizeof r;
    if (RAND_bytes(r, (int)nbytes) != 1)
        for (size_t i = 0; i < nbytes; i++) /* only when the generator fails: still unique */
            r[i] = (unsigned char)((uintptr_t)out >> (i % 8) ^ (unsigned)time(NULL) >> i);
    for (size_t i = 0; i < nbytes; i++)
        sprintf(out + 2 * i, "%02x", r[i]);
}

static void message_id_field(struct ctx *c)
{
    if (c->m->message_id) {
        cbuf_fmt(&c->out, "Message-ID: <%s>\r\n", c->m->message_id);
        return;
    }
    char addr[SMTP_PATH_MAX + 1] = "", id[33];
    compose_sender(c->m, addr, sizeof addr, NULL, 0);
    const char *at = strrchr(addr, '@');
    random_hex(id, 16);
    /* the id's right side is the sender's domain when that is plain ASCII */
    bool usable = at && at[1] && compose_ascii(at + 1, strlen(at + 1));
    cbuf_fmt(&c->out, "Message-ID: <%s@%s>\r\n", id, usable ? at + 1 : "localhost");
}

/* Text with LF, CR or CRLF line ends, as CRLF lines ending in CRLF. */
static void normalise(struct cbuf *b, const char *s)
{
    size_t start = 0, i = 0, n = strlen(s);
    for (; i < n; i++) {
        if (s[i] != '\r' && s[i] != '\n')
            continue;
        cbuf_add(b, s + start, i - start);
        cbuf_add(b, "\r\n", 2);
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
            i++;
        start = i + 1;
    }
    cbuf_add(b, s + start, n - start);
    if (n > start || n == 0)
        cbuf_add(b, "\r\n", 2);
}

/* 7bit needs ASCII lines within 998 octets; "=_" would be able to meet the
 * boundaries (which start with it), so such text goes quoted-printable too. */
static bool needs_qp(const char *s, size_t n)
{
    if (!compose_ascii(s, n) || memmem(s, n, "=_", 2))
        return true;
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n')
            col = 0;
        else if (++col > LINE_HARD)
            return true;
    }
    return false;
}

static void text_entity(struct ctx *c, const char *subtype, const char *text)
{
    struct cbuf norm = {0};
    normalise(&norm, text);
    if (norm.oom) {
        c->out.oom = true;
        free(norm.p);
        return;
    }
    bool qp = needs_qp(norm.p, norm.len);
    cbuf_fmt(&c->out,
             "Content-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n",
             subtype, qp ? "quoted-printable" : "7bit");
    if (qp)
        compose_qp(&c->out, norm.p, norm.len);
    else
        cbuf_add(&c->out, norm.p, norm.len);
    free(norm.p);
}

static void attachment_entity(struct ctx *c, const struct compose_attachment *a)
{
    const char *type = a->content_type ? a->content_type : compose_guess_type(a->filename);
    cbuf_fmt(&c->out, "Content-Type: %s", type);
    compose_param(&c->out, "name", a->filename);
    cbuf_fmt(&c->out, "\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: %s",
             a->content_id ? "inline" : "attachment");
    compose_param(&c->out, "filename", a->filename);
    cbuf_add(&c->out, "\r\n", 2);
    if (a->content_id)
        cbuf_fmt(&c->out, "Content-ID: <%s>\r\n", a->content_id);
    cbuf_add(&c->out, "\r\n", 2);
    compose_base64_lines(&c->out, a->data, a->len);
}

static void start_multipart(struct ctx *c, const char *subtype, char *boundary, size_t cap)
{
    snprintf(boundary, cap, "=_%s.%d", c->boundary_seed, c->nboundary++);
    cbuf_fmt(&c->out, "Content-Type: multipart/%s;\r\n\tboundary=\"%s\"\r\n\r\n", subtype,
             boundary);
}

/* Each delimiter after the first starts with its own CRLF (RFC 2046 5.1.1:
 * the CRLF before "--" belongs to the delimiter), so a part keeps the line
 * break that ends its last line. The text/html core: one part, or multipart/alternative of both. */
static void body_entity(struct ctx *c)
{
    const struct compose_msg *m = c->m;
    if (m->text && m->html) {
        char b[64];
        start_multipart(c, "alternative", b, sizeof b);
        cbuf_fmt(&c->out, "--%s\r\n", b);
        text_entity(c, "plain", m->text);
        cbuf_fmt(&c->out, "\r\n--%s\r\n", b);
        text_entity(c, "html", m->html);
        cbuf_fmt(&c->out, "\r\n--%s--\r\n", b);
    } else if (m->html) {
        text_entity(c, "html", m->html);
    } else {
        text_entity(c, "plain", m->text ? m->text : "");
    }
}

static void related_entity(struct ctx *c, size_t ninline)
{
    if (ninline == 0) {
        body_entity(c);
        return;
    }
    char b[64];
    start_multipart(c, "related", b, sizeof b);
    cbuf_fmt(&c->out, "--%s\r\n", b);
    body_entity(c);
    for (size_t i = 0; i < c->m->nattachments; i++) {
        if (!c->m->attachments[i].content_id)
            continue;
        cbuf_fmt(&c->out, "\r\n--%s\r\n", b);
        attachment_entity(c, &c->m->attachments[i]);
    }
    cbuf_fmt(&c->out, "\r\n--%s--\r\n", b);
}

static void root_entity(struct ctx *c)
{
    size_t ninline = 0;
    for (size_t i = 0; i < c->m->nattachments; i++)
        ninline += c->m->attachments[i].content_id != NULL;
    if (ninline == c->m->nattachments) {
        related_entity(c, ninline);
        return;
    }
    char b[64];
    start_multipart(c, "mixed", b, sizeof b);
    cbuf_fmt(&c->out, "--%s\r\n", b);
    related_entity(c, ninline);
    for (size_t i = 0; i < c->m->nattachments; i++) {
        if (c->m->attachments[i].content_id)
            continue;
        cbuf_fmt(&c->out, "\r\n--%s\r\n", b);
        attachment_entity(c, &c->m->attachments[i]);
    }
    cbuf_fmt(&c->out, "\r\n--%s--\r\n", b);
}

static int header_block(struct ctx *c)
{
    const struct compose_msg *m = c->m;
    date_field(c);
    const char *from = m->from;
    if (mailbox_field(c, "From", &from, 1) ||
        (m->reply_to && mailbox_field(c, "Reply-To", &m->reply_to, 1)) ||
        mailbox_field(c, "To", m->to, m->nto) || mailbox_field(c, "Cc", m->cc, m->ncc))
        return COMPOSE_EINVAL;
    if (m->subject) {
        struct cbuf s = {0};
        if (compose_ascii(m->subject, strlen(m->subject)))
            cbuf_str(&s, m->subject);
        else
            compose_encoded_words(&s, m->subject);
        int rc = s.oom ? 0 : compose_field(&c->out, "Subject", s.p ? s.p : "", s.len);
        free(s.p);
        if (rc)
            return fail(c->err, c->errlen, "subject: a word longer than %d octets", LINE_HARD);
    }
    message_id_field(c);
    cbuf_str(&c->out, "MIME-Version: 1.0\r\n");
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct compose_header *h = &m->headers[i];
        struct cbuf v = {0};
        if (compose_ascii(h->value, strlen(h->value)))
            cbuf_str(&v, h->value);
        else
            compose_encoded_words(&v, h->value);
        int rc = v.oom ? 0 : compose_field(&c->out, h->name, v.p ? v.p : "", v.len);
        free(v.p);
        if (rc)
            return fail(c->err, c->errlen, "header %s: a word longer than %d octets", h->name,
                        LINE_HARD);
    }
    return COMPOSE_OK;
}

int compose_build(const struct compose_msg *m, char **out, size_t *outlen, char *err, size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    if (err && errlen)
        err[0] = '\0';
    int rc = check_msg(m, err, errlen);
    if (rc)
        return rc;
    struct ctx c = {.m = m, .err = err, .errlen = errlen};
    random_hex(c.boundary_seed, 12);
    rc = header_block(&c);
    if (rc == COMPOSE_OK)
        root_entity(&c);
    if (rc == COMPOSE_OK && c.out.oom) {
        snprintf(err ? err : (char[1]){0}, err ? errlen : 1, "out of memory");
        rc = COMPOSE_ENOMEM;
    }
    if (rc != COMPOSE_OK) {
        free(c.out.p);
        return rc;
    }
    *out = c.out.p;
    *outlen = c.out.len;
    return COMPOSE_OK;
}

int compose_sender(const struct compose_msg *m, char *out, size_t cap, char *err, size_t errlen)
{
    struct addrlist l;
    char why[256];
    if (!m->from || addrlist_parse(m->from, strlen(m->from), &l, why, sizeof why) != 0)
        return fail(err, errlen, "from: %s", m->from ? why : "required");
    int rc = COMPOSE_OK;
    if (l.n != 1)
        rc = fail(err, errlen, "from: exactly one address expected (%zu given)", l.n);
    else if (strlen(l.v[0].addr) >= cap)
        rc = fail(err, errlen, "from: address too long");
    else
        strcpy(out, l.v[0].addr);
    addrlist_free(&l);
    return rc;
}

void compose_recipients_free(char **rcpts, size_t n)
{
    for (size_t i = 0; rcpts && i < n; i++)
        free(rcpts[i]);
    free(rcpts);
}

int compose_recipients(const struct compose_msg *m, char ***rcpts, size_t *n, char *err,
                       size_t errlen)
{
    const char *const *lists[3] = {m->to, m->cc, m->bcc};
    size_t counts[3] = {m->nto, m->ncc, m->nbcc};
    static const char *const names[3] = {"to", "cc", "bcc"};
    char **v = NULL;
    size_t count = 0;
    *rcpts = NULL;
    *n = 0;
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            struct addrlist l;
            char why[256];
            if (!lists[k][i] ||
                addrlist_parse(lists[k][i], strlen(lists[k][i]), &l, why, sizeof why) != 0) {
                compose_recipients_free(v, count);
                return fail(err, errlen, "%s: %s", names[k], lists[k][i] ? why : "missing");
            }
            for (size_t j = 0; j < l.n; j++) {
                bool dup = false;
                for (size_t d = 0; d < count && !dup; d++)
                    dup = strcasecmp(v[d], l.v[j].addr) == 0;
                if (dup)
                    continue;
                char **nv = realloc(v, (count + 1) * sizeof *nv);
                if (!nv) {
                    addrlist_free(&l);
                    compose_recipients_free(v, count);
                    return COMPOSE_ENOMEM;
                }
                v = nv;
                v[count++] = l.v[j].addr;
                l.v[j].addr = NULL;
            }
            addrlist_free(&l);
        }
    }
    *rcpts = v;
    *n = count;
    return COMPOSE_OK;
}
