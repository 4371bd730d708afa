/* The composer's encoders: quoted-printable (RFC 2045 6.7), base64 lines
 * (6.8), encoded words (RFC 2047), parameter values (RFC 2231), folded
 * header fields (RFC 5322 2.2.3), and the content type of a file name. */
#include "mail/compose.h"
#include "mail/compose_int.h"

#include "core/base64.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cbuf_add(struct cbuf *b, const void *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cbuf_str(struct cbuf *b, const char *s)
{
    cbuf_add(b, s, strlen(s));
}

void cbuf_fmt(struct cbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        b->oom = true; /* callers format short things only */
    else
        cbuf_add(b, tmp, (size_t)n);
}

bool compose_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

bool compose_check_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

void compose_base64_lines(struct cbuf *b, const void *data, size_t len)
{
    /* 57 input octets make one 76-column line */
    const unsigned char *p = data;
    char line[COMPOSE_ENCODED_LINE + 4];
    for (size_t off = 0; off < len; off += 57) {
        size_t n = len - off < 57 ? len - off : 57;
        size_t w = base64_encode(p + off, n, line);
        memcpy(line + w, "\r\n", 2);
        cbuf_add(b, line, w + 2);
    }
}

static const char hex[] = "0123456789ABCDEF";

void compose_qp(struct cbuf *b, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *eol = memchr(s + i, '\r', n - i);
        size_t end = eol ? (size_t)(eol - s) : n;
        size_t col = 0;
        for (size_t k = i; k < end; k++) {
            unsigned char c = (unsigned char)s[k];
            char tok[3];
            size_t w = 1;
            bool last = k + 1 == end;
            if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last)) {
                tok[0] = (char)c;
            } else {
                tok[0] = '=';
                tok[1] = hex[c >> 4];
                tok[2] = hex[c & 15];
                w = 3;
            }
            /* a soft break "=" must fit in the 76 columns too */
            if (col + w > COMPOSE_ENCODED_LINE - 1 && !(last && col + w <= COMPOSE_ENCODED_LINE)) {
                cbuf_add(b, "=\r\n", 3);
                col = 0;
            }
            cbuf_add(b, tok, w);
            col += w;
        }
        cbuf_add(b, "\r\n", 2);
        i = eol ? end + 2 : n;
    }
}

void compose_encoded_words(struct cbuf *b, const char *s)
{
    /* "=?utf-8?B?" + 60 + "?=" = 72 octets: 45 input octets per word */
    size_t n = strlen(s), off = 0;
    char enc[BASE64_ENCODED_SIZE(45)];
    while (off < n) {
        size_t take = n - off < 45 ? n - off : 45;
        /* do not cut a UTF-8 sequence: back off over continuation octets */
        while (take < n - off && take > 0 && ((unsigned char)s[off + take] & 0xC0) == 0x80)
            take--;
        if (take == 0)
            take = n - off < 45 ? n - off : 45;
        base64_encode(s + off, take, enc);
        cbuf_fmt(b, "%s=?utf-8?B?%s?=", off ? " " : "", enc);
        off += take;
    }
}

static bool atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

void compose_display_name(struct cbuf *b, const char *name)
{
    size_t n = strlen(name);
    if (!compose_ascii(name, n)) {
        compose_encoded_words(b, name);
        return;
    }
    bool atoms = n > 0 && name[0] != ' ' && name[n - 1] != ' ';
    for (size_t i = 0; i < n && atoms; i++)
        atoms = atext((unsigned char)name[i]) || (name[i] == ' ' && name[i + 1] != ' ');
    if (atoms) {
        cbuf_add(b, name, n);
        return;
    }
    cbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"' || name[i] == '\\')
            cbuf_add(b, "\\", 1);
        cbuf_add(b, name + i, 1);
    }
    cbuf_add(b, "\"", 1);
}

static bool attr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$&+-.^_`|~", c));
}

void compose_param(struct cbuf *b, const char *name, const char *value)
{
    size_t n = strlen(value);
    if (compose_ascii(value, n)) {
        cbuf_fmt(b, ";\r\n\t%s=\"", name);
        for (size_t i = 0; i < n; i++) {
            if (value[i] == '"' || value[i] == '\\')
                cbuf_add(b, "\\", 1);
            cbuf_add(b, value + i, 1);
        }
        cbuf_add(b, "\"", 1);
        return;
    }
    /* RFC 2231 4 with continuations (3) so no line grows past 78 */
    size_t part = 0, col = 0;
    for (size_t i = 0; i < n; part++) {
        cbuf_fmt(b, ";\r\n\t%s*%zu*=%s", name, part, part == 0 ? "utf-8''" : "");
        col = 0;
        while (i < n && col < 54) {
            unsigned char c = (unsigned char)value[i++];
            if (attr_char(c)) {
                cbuf_add(b, &c, 1);
                col++;
            } else {
                char t[3] = {'%', hex[c >> 4], hex[c & 15]};
                cbuf_add(b, t, 3);
                col += 3;
            }
        }
    }
}

int compose_field(struct cbuf *b, const char *name, const char *value, size_t vlen)
{
    size_t nlen = strlen(name);
    cbuf_add(b, name, nlen);
    cbuf_add(b, ":", 1);
    size_t col = nlen + 1, i = 0;
    while (i < vlen) {
        /* the next word with the white space before it */
        size_t ws = i;
        while (ws < vlen && value[ws] == ' ')
            ws++;
        size_t end = ws;
        while (end < vlen && value[end] != ' ')
            end++;
        size_t word = end - ws, lead = ws - i;
        if (lead == 0)
            lead = i == 0 ? 1 : 0; /* after "Name:" */
        if (col > nlen + 1 && col + lead + word > 78) {
            cbuf_add(b, "\r\n", 2);
            col = 0;
            if (lead == 0)
                lead = 1;
        }
        for (size_t k = 0; k < lead; k++)
            cbuf_add(b, " ", 1);
        cbuf_add(b, value + ws, word);
        col += lead + word;
        if (col > 998)
            return -1;
        i = end;
    }
    cbuf_add(b, "\r\n", 2);
    return 0;
}

static const struct {
    const char *ext, *type;
} types[] = {
    {"txt", "text/plain"},
    {"csv", "text/csv"},
    {"htm", "text/html"},
    {"html", "text/html"},
    {"css", "text/css"},
    {"ics", "text/calendar"},
    {"md", "text/markdown"},
    {"xml", "application/xml"},
    {"json", "application/json"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tar", "application/x-tar"},
    {"doc", "application/msword"},
    {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
    {"xls", "application/vnd.ms-excel"},
    {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
    {"pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
    {"odt", "application/vnd.oasis.opendocument.text"},
    {"ods", "application/vnd.oasis.opendocument.spreadsheet"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"svg", "image/svg+xml"},
    {"ico", "image/vnd.microsoft.icon"},
    {"mp3", "audio/mpeg"},
    {"wav", "audio/wav"},
    {"mp4", "video/mp4"},
    {"eml", "message/rfc822"},
};

const char *compose_guess_type(const char *filename)
{
    const char *dot = filename ? strrchr(filename, '.') : NULL;
    if (dot && dot[1])
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}
