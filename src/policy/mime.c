/* MIME structure for content policy, read after DATA and before the spool
 * write: which leaf parts a message has, what they claim to be and what they
 * are called, so that attachments of blocked kinds are refused at submission
 * instead of being relayed. The walker never recurses past its limits and
 * keeps going on malformed input the way mail clients do, since what a client
 * would show is what matters. */
#include "policy/mime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/mime_field.h"

/* RFC 2046 section 5.1.1: boundary is 1 to 70 characters; longer ones are
 * seen in the wild and accepted up to this. */
#define MIME_BOUNDARY_MAX 200

/* ---- the walk ---- */

struct scan {
    const char *msg;
    struct mime_report *r;
    struct mime_limits lim;
    size_t nodes;
    size_t cap;
    int err;
};

struct entity_info {
    char type[MIME_TYPE_MAX];
    char disposition[MIME_TOKEN_MAX];
    char encoding[MIME_TOKEN_MAX];
    char boundary[MIME_BOUNDARY_MAX + 1];
    struct mime_buf filename, name;
    bool name_undecoded;
    const char *body;
};

/* Keeps the start and the end of an over-long name (the extension is at the
 * end), joined by U+2026, on UTF-8 character boundaries. */
static void store_name(char *dst, const struct mime_buf *src, unsigned *flags)
{
    if (src->n < MIME_NAME_MAX) {
        memcpy(dst, src->p ? src->p : "", src->n + 1);
        return;
    }
    *flags |= MIME_PF_NAME_TRUNCATED;
    size_t head = 80, tail = MIME_NAME_MAX - 1 - head - 3;
    while (head > 0 && ((unsigned char)src->p[head] & 0xc0) == 0x80)
        head--;
    size_t ts = src->n - tail;
    while (ts < src->n && ((unsigned char)src->p[ts] & 0xc0) == 0x80)
        ts++;
    memcpy(dst, src->p, head);
    memcpy(dst + head, "\xe2\x80\xa6", 3);
    memcpy(dst + head + 3, src->p + ts, src->n - ts);
    dst[head + 3 + src->n - ts] = '\0';
}

/* Reads an entity's header: Content-Type, -Disposition, -Transfer-Encoding. */
static void read_header(struct scan *sc, const char *p, const char *end, const char *default_type,
                        struct entity_info *ei)
{
    bool have_type = false, have_disp = false, have_cte = false;
    struct mime_field f;
    int rc;

    memset(ei, 0, sizeof(*ei));
    snprintf(ei->type, sizeof(ei->type), "%s", default_type);
    snprintf(ei->encoding, sizeof(ei->encoding), "7bit");
    while ((rc = mime_field_next(&p, end, &f)) == 1) {
        bool is_type = mime_span_ieq(f.name, "Content-Type");
        bool is_disp = mime_span_ieq(f.name, "Content-Disposition");
        bool is_cte = mime_span_ieq(f.name, "Content-Transfer-Encoding");
        if (!is_type && !is_disp && !is_cte)
            continue;
        if ((is_type && have_type) || (is_disp && have_disp) || (is_cte && have_cte)) {
            /* Readers disagree on which copy wins: say so, keep the first. */
            sc->r->flags |= MIME_F_DUPLICATE_FIELD;
            continue;
        }
        size_t vl;
        char *v = mime_field_unfold(f.raw, SIZE_MAX, &vl);
        if (v == NULL) {
            sc->err = -1;
            return;
        }
        struct mime_ctvalue cv;
        if (is_cte) {
            have_cte = true;
            mime_ctvalue_parse(v, vl, false, &cv);
            if (cv.ok)
                mime_copy_str(ei->encoding, sizeof(ei->encoding), cv.token);
        } else if (is_type) {
            have_type = true;
            mime_ctvalue_parse(v, vl, true, &cv);
            if (!cv.ok) {
                /* RFC 2045 section 5.2: an unreadable type is text/plain. */
                sc->r->flags |= MIME_F_BAD_CONTENT_TYPE;
                snprintf(ei->type, sizeof(ei->type), "text/plain");
            } else {
                snprintf(ei->type, sizeof(ei->type), "%s", cv.token);
                /* The boundary is compared octet for octet: taken as it
                 * stands, never decoded. */
                for (size_t i = 0; i < cv.nparams; i++) {
                    const struct mime_param *pm = &cv.params[i];
                    if (pm->section < 0 && !pm->extended && !strcmp(pm->name, "boundary")) {
                        if (pm->vlen > 0 && pm->vlen <= MIME_BOUNDARY_MAX)
                            memcpy(ei->boundary, pm->value, pm->vlen);
                        ei->boundary[pm->vlen <= MIME_BOUNDARY_MAX ? pm->vlen : 0] = '\0';
                        break;
                    }
                }
                mime_param_get(&cv, "name", &ei->name, &ei->name_undecoded);
            }
        } else {
            have_disp = true;
            mime_ctvalue_parse(v, vl, false, &cv);
            if (cv.ok) {
                mime_copy_str(ei->disposition, sizeof(ei->disposition), cv.token);
                mime_param_get(&cv, "filename", &ei->filename, &ei->name_undecoded);
            }
        }
        free(v);
        /* Padding that pushes a name past what is decoded must not let it
         * through unseen. */
        if (cv.overflow || ei->filename.overflow || ei->name.overflow)
            sc->r->flags |= MIME_F_TOO_COMPLEX;
        if (ei->filename.oom || ei->name.oom) {
            sc->err = -1;
            return;
        }
    }
    if (rc < 0)
        sc->r->flags |= MIME_F_BAD_HEADER;
    ei->body = p;
}

/* First octets of the body after transfer decoding: enough to recognise an
 * executable under a harmless name. */
static void sniff(struct mime_part *part, const char *b, size_t n, const char *encoding)
{
    if (!strcmp(encoding, "base64")) {
        part->magic_len = mime_b64_lenient(b, n < 64 ? n : 64, part->magic, MIME_MAGIC_LEN);
    } else if (!strcmp(encoding, "quoted-printable")) {
        size_t o = 0;
        for (size_t i = 0; i < n && o < MIME_MAGIC_LEN; i++) {
            if (b[i] == '=' && i + 2 < n && mime_hexval((unsigned char)b[i + 1]) >= 0 &&
                mime_hexval((unsigned char)b[i + 2]) >= 0) {
                part->magic[o++] = (unsigned char)(mime_hexval((unsigned char)b[i + 1]) << 4 |
                                                   mime_hexval((unsigned char)b[i + 2]));
                i += 2;
            } else if (b[i] == '=' && i + 1 < n && (b[i + 1] == '\r' || b[i + 1] == '\n')) {
                i += (b[i + 1] == '\r' && i + 2 < n && b[i + 2] == '\n') ? 2 : 1;
            } else {
                part->magic[o++] = (unsigned char)b[i];
            }
        }
        part->magic_len = o;
    } else {
        part->magic_len = n < MIME_MAGIC_LEN ? n : MIME_MAGIC_LEN;
        memcpy(part->magic, b, part->magic_len);
    }
}

static void add_leaf(struct scan *sc, struct entity_info *ei, const char *body_end,
                     const char *path, unsigned depth)
{
    struct mime_report *r = sc->r;
    if (r->count == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 8;
        struct mime_part *np = realloc(r->parts, cap * sizeof(*np));
        if (np == NULL) {
            sc->err = -1;
            return;
        }
        r->parts = np;
        sc->cap = cap;
    }
    struct mime_part *part = &r->parts[r->count++];
    memset(part, 0, sizeof(*part));
    snprintf(part->content_type, sizeof(part->content_type), "%s", ei->type);
    snprintf(part->disposition, sizeof(part->disposition), "%s", ei->disposition);
    snprintf(part->encoding, sizeof(part->encoding), "%s", ei->encoding);
    snprintf(part->path, sizeof(part->path), "%s", path[0] ? path : "1");
    store_name(part->filename, &ei->filename, &part->flags);
    store_name(part->name, &ei->name, &part->flags);
    if (ei->name_undecoded)
        part->flags |= MIME_PF_NAME_UNDECODED;
    if (ei->filename.n && ei->name.n && strcmp(ei->filename.p, ei->name.p) != 0)
        part->flags |= MIME_PF_NAME_MISMATCH;
    part->offset = (size_t)(ei->body - sc->msg);
    part->size = body_end > ei->body ? (size_t)(body_end - ei->body) : 0;
    part->depth = depth;
    sniff(part, ei->body, part->size, ei->encoding);
}

/* Finds the next delimiter line "--boundary" [ "--" ] *LWSP CRLF at or
 * after p (RFC 2046 section 5.1.1). On success sets *line (its start),
 * *next (the line after it) and *close. */
static bool find_delimiter(const char *p, const char *start, const char *end, const char *dash_bnd,
                           size_t dlen, const char **line, const char **next, bool *close)
{
    while (p < end) {
        const char *hit = memmem(p, (size_t)(end - p), dash_bnd, dlen);
        if (hit == NULL)
            return false;
        if (hit == start || hit[-1] == '\n') {
            const char *q = hit + dlen;
            bool c = end - q >= 2 && q[0] == '-' && q[1] == '-';
            if (c)
                q += 2;
            while (q < end && (*q == ' ' || *q == '\t'))
                q++;
            if (q == end || *q == '\n' || (*q == '\r' && (q + 1 == end || q[1] == '\n'))) {
                *line = hit;
                *next = mime_line_end(q, end);
                *close = c;
                return true;
            }
        }
        p = hit + 1;
    }
    return false;
}

/* Where a part's content ends: before the line break that precedes the
 * delimiter, which belongs to the delimiter. */
static const char *content_end(const char *part_start, const char *delim)
{
    const char *e = delim;
    if (e > part_start && e[-1] == '\n')
        e--;
    if (e > part_start && e[-1] == '\r')
        e--;
    return e;
}

static void scan_entity(struct scan *sc, const char *p, const char *end, unsigned depth,
                        const char *path, const char *default_type);

static void scan_multipart(struct scan *sc, struct entity_info *ei, const char *end, unsigned depth,
                           const char *path)
{
    char pattern[MIME_BOUNDARY_MAX + 3];
    size_t blen = strlen(ei->boundary);
    const char *line, *next;
    bool close = false;
    const char *child_default =
        strcmp(ei->type, "multipart/digest") == 0 ? "message/rfc822" : "text/plain";

    /* "--" boundary, searched as one string. */
    pattern[0] = '-';
    pattern[1] = '-';
    memcpy(pattern + 2, ei->boundary, blen + 1);
    sc->r->multiparts++;
    if (!find_delimiter(ei->body, ei->body, end, pattern, blen + 2, &line, &next, &close)) {
        /* No part at all: the body is all there is to look at. */
        sc->r->flags |= MIME_F_NO_PARTS;
        add_leaf(sc, ei, end, path, depth);
        return;
    }
    unsigned index = 0;
    while (!close && sc->err == 0) {
        const char *part = next;
        const char *dline, *dnext;
        bool dclose = false;
        char child[MIME_PATH_MAX];
        bool found =
            find_delimiter(part, ei->body, end, pattern, blen + 2, &dline, &dnext, &dclose);
        const char *part_end = found ? content_end(part, dline) : end;
        if (!found)
            sc->r->flags |= MIME_F_MISSING_CLOSE;
        index++;
        int n = snprintf(child, sizeof(child), "%s%s%u", path, path[0] ? "." : "", index);
        if (n < 0 || (size_t)n >= sizeof(child)) {
            sc->r->flags |= MIME_F_TOO_COMPLEX;
            return;
        }
        if (!found && part >= end)
            break; /* delimiter was the last line: nothing follows */
        scan_entity(sc, part, part_end, depth + 1, child, child_default);
        if (!found || (sc->r->flags & MIME_F_TOO_COMPLEX))
            return;
        next = dnext;
        close = dclose;
    }
}

static void scan_entity(struct scan *sc, const char *p, const char *end, unsigned depth,
                        const char *path, const char *default_type)
{
    struct entity_info ei;

    if (sc->err != 0)
        return;
    if (depth > sc->lim.max_depth || sc->nodes >= sc->lim.max_parts) {
        sc->r->flags |= MIME_F_TOO_COMPLEX;
        return;
    }
    sc->nodes++;
    if (depth > sc->r->max_depth)
        sc->r->max_depth = depth;
    read_header(sc, p, end, default_type, &ei);
    if (sc->err == 0) {
        bool identity = !strcmp(ei.encoding, "7bit") || !strcmp(ei.encoding, "8bit") ||
                        !strcmp(ei.encoding, "binary");
        if (strncmp(ei.type, "multipart/", 10) == 0) {
            if (ei.boundary[0] != '\0') {
                scan_multipart(sc, &ei, end, depth, path);
            } else {
                sc->r->flags |= MIME_F_NO_BOUNDARY;
                add_leaf(sc, &ei, end, path, depth);
            }
        } else if ((!strcmp(ei.type, "message/rfc822") || !strcmp(ei.type, "message/global")) &&
                   identity) {
            /* RFC 2046 section 5.2.1: an attached message is walked too, its
             * attachments are as dangerous as the outer ones. */
            sc->r->multiparts++;
            scan_entity(sc, ei.body, end, depth + 1, path, "text/plain");
        } else {
            add_leaf(sc, &ei, end, path, depth);
        }
    }
    free(ei.filename.p);
    free(ei.name.p);
}

int mime_scan_limits(const char *msg, size_t len, const struct mime_limits *limits,
                     struct mime_report *out)
{
    struct scan sc = {.msg = msg, .r = out};

    memset(out, 0, sizeof(*out));
    sc.lim.max_depth = limits && limits->max_depth ? limits->max_depth : MIME_DEFAULT_MAX_DEPTH;
    sc.lim.max_parts = limits && limits->max_parts ? limits->max_parts : MIME_DEFAULT_MAX_PARTS;
    scan_entity(&sc, msg, msg + len, 0, "", "text/plain");
    if (sc.err != 0)
        return -1;
    return (out->flags & MIME_F_TOO_COMPLEX) ? MIME_ETOOCOMPLEX : 0;
}

int mime_scan(const char *msg, size_t len, struct mime_report *out)
{
    return mime_scan_limits(msg, len, NULL, out);
}

void mime_report_free(struct mime_report *r)
{
    if (r == NULL)
        return;
    free(r->parts);
    r->parts = NULL;
    r->count = 0;
}

/* ---- policy ---- */

/* Is word (n octets) in the comma list? Case-insensitive, spaces ignored. */
static bool in_list(const char *list, const char *word, size_t n)
{
    if (list == NULL || n == 0)
        return false;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '.')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && e[-1] == ' ')
            e--;
        if ((size_t)(e - s) == n && strncasecmp(s, word, n) == 0)
            return true;
        /* "type/" and an asterisk matches every subtype */
        if (e - s >= 2 && e[-1] == '*' && e[-2] == '/' && n > (size_t)(e - s - 1) &&
            strncasecmp(s, word, (size_t)(e - s - 1)) == 0)
            return true;
    }
    return false;
}

static bool has_bidi_override(const char *s)
{
    /* U+202A..U+202E and U+2066..U+2069 change how the name is displayed. */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (p[0] == 0xe2 && p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae)
            return true;
        else if (p[0] == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)
            return true;
    return false;
}

/* Checks a name segment [s, e): the extension Windows would use (trailing
 * dots and spaces dropped) and the one before it. */
static bool segment_blocked(const char *s, const char *e, const char *exts, const char *fname,
                            char *why, size_t why_size)
{
    while (e > s && (e[-1] == '.' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    const char *dot = NULL;
    for (const char *q = e; q > s; q--)
        if (q[-1] == '.') {
            dot = q - 1;
            break;
        }
    if (dot == NULL)
        return false;
    const char *ext = dot + 1;
    size_t el = (size_t)(e - ext);
    if (!in_list(exts, ext, el))
        return false;
    /* A second extension in front ("invoice.pdf.exe") is the usual disguise. */
    const char *e2 = dot;
    while (e2 > s && (e2[-1] == ' ' || e2[-1] == '.'))
        e2--;
    const char *dot2 = NULL;
    for (const char *q = e2; q > s; q--)
        if (q[-1] == '.') {
            dot2 = q - 1;
            break;
        }
    if (dot2 != NULL && e2 - dot2 > 1 && e2 - dot2 <= 5)
        snprintf(why, why_size,
                 "attachment '%s' has a blocked extension .%.*s (double extension .%.*s.%.*s)",
                 fname, (int)el, ext, (int)(e2 - dot2 - 1), dot2 + 1, (int)el, ext);
    else
        snprintf(why, why_size, "attachment '%s' has a blocked extension .%.*s", fname, (int)el,
                 ext);
    return true;
}

static bool name_blocked(const char *fname, const char *exts, char *why, size_t why_size)
{
    if (fname[0] == '\0')
        return false;
    /* Readers differ at a NUL or control character (some cut the name
     * there): every piece before one is checked as a whole name. */
    const char *s = fname;
    const char *r;
    while ((r = strstr(s, MIME_REPLACEMENT)) != NULL) {
        if (segment_blocked(fname, r, exts, fname, why, why_size))
            return true;
        s = r + 3;
    }
    if (segment_blocked(fname, fname + strlen(fname), exts, fname, why, why_size))
        return true;
    if (has_bidi_override(fname)) {
        snprintf(why, why_size, "attachment name '%s' uses a right-to-left override", fname);
        return true;
    }
    return false;
}

int mime_blocked(const struct mime_report *r, const char *blocked_exts, const char *blocked_types,
                 char *why, size_t why_size)
{
    if (why_size > 0)
        why[0] = '\0';
    if (r->flags & MIME_F_TOO_COMPLEX) {
        snprintf(why, why_size, "message structure too complex to inspect");
        return 1;
    }
    for (size_t i = 0; i < r->count; i++) {
        const struct mime_part *p = &r->parts[i];
        const char *shown = p->filename[0] ? p->filename : p->name;
        if (in_list(blocked_types, p->content_type, strlen(p->content_type))) {
            snprintf(why, why_size, "part %s has blocked type %s%s%s%s", p->path, p->content_type,
                     shown[0] ? " ('" : "", shown, shown[0] ? "')" : "");
            return 1;
        }
        if (name_blocked(p->filename, blocked_exts, why, why_size) ||
            name_blocked(p->name, blocked_exts, why, why_size))
            return 1;
        /* Executable content whatever the name says: "MZ" opens every
         * Windows program. Only for encoded or non-text parts, where a text
         * starting with those letters is not plausible. */
        bool binary = !strcmp(p->encoding, "base64") || strncmp(p->content_type, "text/", 5) != 0;
        if (binary && p->magic_len >= 2 && p->magic[0] == 'M' && p->magic[1] == 'Z' &&
            in_list(blocked_exts, "exe", 3)) {
            snprintf(why, why_size, "part %s%s%s%s is a Windows executable (declared %s)", p->path,
                     shown[0] ? " ('" : "", shown, shown[0] ? "')" : "", p->content_type);
            return 1;
        }
    }
    return 0;
}
