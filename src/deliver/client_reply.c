/* SMTP reply parsing for the delivery client: turns the bytes a smarthost
 * answers with into code, enhanced status code and text, and an EHLO reply
 * into the set of extensions the client may use. Pure functions. */
#include "deliver/client_reply.h"

#include <string.h>

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static char ascii_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

static bool word_equals(const char *w, size_t len, const char *upper)
{
    size_t n = strlen(upper);
    if (len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ascii_upper(w[i]) != upper[i])
            return false;
    return true;
}

int smtp_reply_line_parse(const char *line, size_t len, struct smtp_reply_line *out)
{
    /* RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39 */
    if (len < 3 || line[0] < '2' || line[0] > '5' || !is_digit(line[1]) || !is_digit(line[2]))
        return -1;
    out->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (len == 3) {
        out->last = true;
        out->text = line + 3;
        out->text_len = 0;
        return 0;
    }
    if (line[3] == ' ')
        out->last = true;
    else if (line[3] == '-')
        out->last = false;
    else
        return -1;
    out->text = line + 4;
    out->text_len = len - 4;
    return 0;
}

/* subject and detail are 1 to 3 digits (RFC 3463 section 2). */
static size_t enhanced_number(const char *p, size_t len)
{
    size_t n = 0;
    while (n < len && n < 4 && is_digit(p[n]))
        n++;
    if (n == 0 || n > 3)
        return 0;
    return n;
}

int smtp_reply_enhanced_parse(const char *text, size_t len, char *out, size_t *consumed)
{
    if (len < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') || text[1] != '.')
        return -1;
    size_t pos = 2;
    size_t n = enhanced_number(text + pos, len - pos);
    if (n == 0)
        return -1;
    pos += n;
    if (pos >= len || text[pos] != '.')
        return -1;
    pos++;
    n = enhanced_number(text + pos, len - pos);
    if (n == 0)
        return -1;
    pos += n;
    if (pos < len && text[pos] != ' ')
        return -1;
    memcpy(out, text, pos);
    out[pos] = '\0';
    *consumed = pos < len ? pos + 1 : pos;
    return 0;
}

void smtp_reply_reset(struct smtp_reply *r)
{
    r->code = 0;
    r->enhanced[0] = '\0';
    r->text[0] = '\0';
    r->text_len = 0;
    r->lines = 0;
    r->complete = false;
}

static void append_text(struct smtp_reply *r, const char *s, size_t len)
{
    size_t room = sizeof(r->text) - 1 - r->text_len;
    if (r->text_len > 0 && room > 0 && len > 0) {
        r->text[r->text_len++] = ' ';
        room--;
    }
    if (len > room)
        len = room;
    for (size_t i = 0; i < len; i++) {
        /* Keep the text printable: it ends up in logs and DSNs. */
        unsigned char ch = (unsigned char)s[i];
        r->text[r->text_len++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    r->text[r->text_len] = '\0';
}

int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
    struct smtp_reply_line l;

    if (r->complete || r->lines >= SMTP_REPLY_LINES_MAX)
        return -1;
    if (smtp_reply_line_parse(line, len, &l) < 0)
        return -1;
    if (r->lines == 0)
        r->code = l.code;
    else if (l.code != r->code)
        return -1;

    const char *text = l.text;
    size_t text_len = l.text_len;
    char enhanced[SMTP_ENHANCED_MAX];
    size_t used;
    if (smtp_reply_enhanced_parse(text, text_len, enhanced, &used) == 0 &&
        enhanced[0] == (char)('0' + r->code / 100)) {
        if (r->lines == 0)
            memcpy(r->enhanced, enhanced, sizeof(enhanced));
        if (r->enhanced[0] != '\0') {
            text += used;
            text_len -= used;
        }
    }
    append_text(r, text, text_len);
    r->lines++;
    if (l.last)
        r->complete = true;
    return l.last ? 1 : 0;
}

int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r, size_t *consumed)
{
    size_t pos = 0;

    smtp_reply_reset(r);
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (nl == NULL)
            return (len - pos > SMTP_REPLY_LINE_TOLERANCE) ? -1 : 0;
        size_t line_len = (size_t)(nl - (buf + pos));
        size_t next = pos + line_len + 1;
        if (line_len > 0 && buf[pos + line_len - 1] == '\r')
            line_len--;
        if (line_len > SMTP_REPLY_LINE_TOLERANCE)
            return -1;
        int rc = smtp_reply_feed(r, buf + pos, line_len);
        if (rc < 0)
            return -1;
        pos = next;
        if (rc == 1) {
            *consumed = pos;
            return 1;
        }
    }
    return 0;
}

static unsigned auth_mech_bit(const char *w, size_t len)
{
    if (word_equals(w, len, "PLAIN"))
        return SMTP_AUTH_BIT_PLAIN;
    if (word_equals(w, len, "LOGIN"))
        return SMTP_AUTH_BIT_LOGIN;
    if (word_equals(w, len, "XOAUTH2"))
        return SMTP_AUTH_BIT_XOAUTH2;
    if (word_equals(w, len, "CRAM-MD5"))
        return SMTP_AUTH_BIT_CRAM_MD5;
    return SMTP_AUTH_BIT_OTHER;
}

/* Parses the SIZE parameter (RFC 1870 section 4: 1*20DIGIT); an absent,
 * zero or unparseable value means "no fixed limit announced". */
static unsigned long long parse_size(const char *p, size_t len)
{
    unsigned long long v = 0;
    if (len == 0 || len > 20)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(p[i]))
            return 0;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (~0ULL - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    return v;
}

int smtp_ehlo_keyword(const char *text, size_t len, struct smtp_ehlo *ehlo)
{
    size_t pos = 0;
    while (pos < len && text[pos] == ' ')
        pos++;
    size_t kw = pos;
    /* RFC 5321 4.1.1.1: ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
     * The historical "AUTH=..." form (pre-RFC 2554 clients) splits at '='. */
    while (pos < len && text[pos] != ' ' && text[pos] != '=')
        pos++;
    size_t kw_len = pos - kw;
    if (kw_len == 0)
        return -1;
    const char *word = text + kw;

    if (word_equals(word, kw_len, "PIPELINING")) {
        ehlo->pipelining = true;
    } else if (word_equals(word, kw_len, "8BITMIME")) {
        ehlo->eightbitmime = true;
    } else if (word_equals(word, kw_len, "SMTPUTF8")) {
        ehlo->smtputf8 = true;
    } else if (word_equals(word, kw_len, "STARTTLS")) {
        ehlo->starttls = true;
    } else if (word_equals(word, kw_len, "ENHANCEDSTATUSCODES")) {
        ehlo->enhancedstatuscodes = true;
    } else if (word_equals(word, kw_len, "DSN")) {
        ehlo->dsn = true;
    } else if (word_equals(word, kw_len, "CHUNKING")) {
        ehlo->chunking = true;
    } else if (word_equals(word, kw_len, "SIZE")) {
        ehlo->size = true;
        while (pos < len && text[pos] == ' ')
            pos++;
        size_t v = pos;
        while (pos < len && text[pos] != ' ')
            pos++;
        ehlo->size_max = parse_size(text + v, pos - v);
    } else if (word_equals(word, kw_len, "AUTH")) {
        while (pos < len) {
            while (pos < len && (text[pos] == ' ' || text[pos] == '='))
                pos++;
            size_t m = pos;
            while (pos < len && text[pos] != ' ')
                pos++;
            if (pos > m)
                ehlo->auth |= auth_mech_bit(text + m, pos - m);
        }
    }
    return 0;
}
