/* The in-memory zone behind dns_resolver_new_zonefile/zonetext: the
 * zone-file line parser, the record table with per-name flags (TIMEOUT,
 * SECURE, BOGUS) and lookups with CNAME following and NODATA/NXDOMAIN as a
 * real server would answer. Also the record functions both backends share. */
#include "mailauth/dns_rr.h"
#include "mailauth/dns_zone.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 1034 §3.6.2: CNAME chains are followed; a bound stops loops. */
#define DNS_MAX_CNAME_HOPS 8

struct zone_record {
    char *name; /* lower-case, no trailing dot */
    struct dns_rr rr;
};

struct zone_flag {
    char *name;
    bool timeout;
    enum dns_security security;
};

struct dns_zone {
    struct zone_record *recs;
    size_t nrecs, caprecs;
    struct zone_flag *flags;
    size_t nflags, capflags;
};

static _Thread_local char zone_error[200];

const char *dns_zone_last_error(void)
{
    return zone_error;
}

void dns_zone_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(zone_error, sizeof zone_error, fmt, ap);
    va_end(ap);
}

int dns_zone_load_text(struct dns_zone *z, const char *text, size_t len)
{
    zone_error[0] = '\0';
    const char *p = text, *end = text + len;
    unsigned lineno = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        int rc = dns_zone_put_line(z, p, (size_t)(le - p));
        if (rc < 0) {
            char why[sizeof zone_error];
            snprintf(why, sizeof why, "%s", zone_error[0] ? zone_error : "out of memory");
            dns_zone_set_error("line %u: %s", lineno, why);
            return rc;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

struct dns_zone *dns_zone_new(void)
{
    return calloc(1, sizeof(struct dns_zone));
}

void dns_zone_free(struct dns_zone *z)
{
    if (!z)
        return;
    for (size_t i = 0; i < z->nrecs; i++) {
        free(z->recs[i].name);
        dns_rr_clear(&z->recs[i].rr);
    }
    free(z->recs);
    for (size_t i = 0; i < z->nflags; i++)
        free(z->flags[i].name);
    free(z->flags);
    free(z);
}

static struct zone_flag *zone_flag_get(struct dns_zone *z, const char *name, bool create)
{
    for (size_t i = 0; i < z->nflags; i++)
        if (strcmp(z->flags[i].name, name) == 0)
            return &z->flags[i];
    if (!create)
        return NULL;
    if (z->nflags == z->capflags) {
        size_t cap = z->capflags ? z->capflags * 2 : 8;
        struct zone_flag *n = realloc(z->flags, cap * sizeof *n);
        if (!n)
            return NULL;
        z->flags = n;
        z->capflags = cap;
    }
    struct zone_flag *f = &z->flags[z->nflags];
    memset(f, 0, sizeof *f);
    if (!(f->name = strdup(name)))
        return NULL;
    z->nflags++;
    return f;
}

int dns_zone_put_rr(struct dns_zone *z, const char *name, const struct dns_rr *rr)
{
    if (!z || !name || !rr)
        return -EINVAL;
    char *norm = dns_name_normalize(name);
    if (!norm)
        return -EINVAL;
    if (z->nrecs == z->caprecs) {
        size_t cap = z->caprecs ? z->caprecs * 2 : 16;
        struct zone_record *n = realloc(z->recs, cap * sizeof *n);
        if (!n) {
            free(norm);
            return -ENOMEM;
        }
        z->recs = n;
        z->caprecs = cap;
    }
    struct zone_record *rec = &z->recs[z->nrecs];
    if (dns_rr_copy(&rec->rr, rr) < 0) {
        free(norm);
        return -ENOMEM;
    }
    rec->name = norm;
    z->nrecs++;
    return 0;
}

int dns_zone_put_timeout(struct dns_zone *z, const char *name)
{
    if (!z)
        return -EINVAL;
    char *norm = dns_name_normalize(name);
    if (!norm)
        return -EINVAL;
    struct zone_flag *f = zone_flag_get(z, norm, true);
    free(norm);
    if (!f)
        return -ENOMEM;
    f->timeout = true;
    return 0;
}

/* A name exists when it owns records or is an ancestor of one that does
 * (RFC 8020: an empty non-terminal is not NXDOMAIN). */
static bool zone_name_exists(const struct dns_zone *z, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < z->nrecs; i++) {
        const char *owner = z->recs[i].name;
        size_t olen = strlen(owner);
        if (olen == nlen && memcmp(owner, name, nlen) == 0)
            return true;
        if (olen > nlen && owner[olen - nlen - 1] == '.' &&
            memcmp(owner + olen - nlen, name, nlen) == 0)
            return true;
    }
    for (size_t i = 0; i < z->nflags; i++)
        if (strcmp(z->flags[i].name, name) == 0)
            return true;
    return false;
}

int dns_zone_answer(struct dns_zone *z, const char *qname, enum dns_type type,
                    struct dns_result *out)
{
    char *name = dns_name_normalize(qname);
    if (!name) {
        out->status = DNS_ERROR;
        return -EINVAL;
    }
    for (int hop = 0; hop <= DNS_MAX_CNAME_HOPS; hop++) {
        const struct zone_flag *f = zone_flag_get(z, name, false);
        if (f && f->security > out->security)
            out->security = f->security;
        if ((f && f->timeout) || out->security == DNS_BOGUS) {
            out->status = DNS_TEMPFAIL;
            free(name);
            return 0;
        }
        const char *cname = NULL;
        for (size_t i = 0; i < z->nrecs; i++) {
            const struct zone_record *rec = &z->recs[i];
            if (strcmp(rec->name, name) != 0)
                continue;
            if (rec->rr.type == type) {
                struct dns_rr copy;
                if (dns_rr_copy(&copy, &rec->rr) < 0 || dns_result_append(out, &copy) < 0) {
                    dns_rr_clear(&copy);
                    free(name);
                    dns_result_clear(out);
                    out->status = DNS_ERROR;
                    return -ENOMEM;
                }
            } else if (rec->rr.type == DNS_T_CNAME && !cname) {
                cname = rec->rr.host;
            }
        }
        if (out->count > 0) {
            out->status = DNS_OK;
            free(name);
            return 0;
        }
        if (cname && type != DNS_T_CNAME) {
            char *next = dns_name_normalize(cname);
            free(name);
            if (!next) {
                out->status = DNS_NXDOMAIN;
                return 0;
            }
            free(out->canonname);
            out->canonname = strdup(next);
            name = next;
            continue;
        }
        out->status = zone_name_exists(z, name) ? DNS_NODATA : DNS_NXDOMAIN;
        free(name);
        return 0;
    }
    /* CNAME loop: a recursive server answers SERVFAIL. */
    free(name);
    out->status = DNS_TEMPFAIL;
    return 0;
}

/* Zone-line tokenizer: words separated by blanks. */
static const char *skip_blank(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *word_end(const char *p, const char *end)
{
    while (p < end && *p != ' ' && *p != '\t')
        p++;
    return p;
}

static int buf_push(char **buf, size_t *len, size_t *cap, char c)
{
    if (*len + 1 >= *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        char *n = realloc(*buf, ncap);
        if (!n)
            return -ENOMEM;
        *buf = n;
        *cap = ncap;
    }
    (*buf)[(*len)++] = c;
    (*buf)[*len] = '\0';
    return 0;
}

/* TXT value: one or more "quoted strings" (concatenated) or, unquoted, the
 * rest of the line as one string. */
static int parse_txt_value(const char *p, const char *end, char **text, size_t *text_len)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (buf_push(&buf, &len, &cap, 'x') < 0)
        return -ENOMEM;
    len = 0;
    buf[0] = '\0';
    if (p < end && *p != '"') {
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        for (; p < end; p++)
            if (buf_push(&buf, &len, &cap, *p) < 0)
                goto oom;
    } else {
        while (p < end) {
            if (*p != '"') {
                dns_zone_set_error("text outside quotes in TXT value");
                goto bad;
            }
            p++;
            for (;;) {
                if (p >= end) {
                    dns_zone_set_error("unterminated quoted string");
                    goto bad;
                }
                char c = *p++;
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (p >= end) {
                        dns_zone_set_error("backslash at end of line");
                        goto bad;
                    }
                    if (isdigit((unsigned char)*p)) {
                        if (end - p < 3 || !isdigit((unsigned char)p[1]) ||
                            !isdigit((unsigned char)p[2])) {
                            dns_zone_set_error("\\DDD escape needs three digits");
                            goto bad;
                        }
                        int v = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
                        if (v > 255) {
                            dns_zone_set_error("\\DDD escape above 255");
                            goto bad;
                        }
                        c = (char)v;
                        p += 3;
                    } else {
                        c = *p++;
                    }
                }
                if (buf_push(&buf, &len, &cap, c) < 0)
                    goto oom;
            }
            p = skip_blank(p, end);
        }
    }
    *text = buf;
    *text_len = len;
    return 0;
oom:
    dns_zone_set_error("out of memory");
bad:
    free(buf);
    return -EINVAL;
}

static int parse_host_value(const char *p, const char *end, char **host)
{
    const char *we = word_end(p, end);
    if (we == p) {
        dns_zone_set_error("missing host name");
        return -EINVAL;
    }
    if (skip_blank(we, end) != end) {
        dns_zone_set_error("extra text after host name");
        return -EINVAL;
    }
    size_t n = (size_t)(we - p);
    if (n > 1 && p[n - 1] == '.')
        n--;
    if (!(*host = strndup(p, n)))
        return -ENOMEM;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_tlsa_value(const char *p, const char *end, struct dns_rr *rr)
{
    unsigned long f[3];
    for (int i = 0; i < 3; i++) {
        p = skip_blank(p, end);
        const char *we = word_end(p, end);
        char tmp[8];
        size_t n = (size_t)(we - p);
        char *ep;
        if (n == 0 || n >= sizeof tmp) {
            dns_zone_set_error("TLSA needs usage, selector, matching type and data");
            return -EINVAL;
        }
        memcpy(tmp, p, n);
        tmp[n] = '\0';
        f[i] = strtoul(tmp, &ep, 10);
        if (*ep || f[i] > 255) {
            dns_zone_set_error("bad TLSA field '%s'", tmp);
            return -EINVAL;
        }
        p = we;
    }
    rr->tlsa_usage = (uint8_t)f[0];
    rr->tlsa_selector = (uint8_t)f[1];
    rr->tlsa_mtype = (uint8_t)f[2];
    p = skip_blank(p, end);
    size_t cap = (size_t)(end - p) / 2 + 1;
    rr->data = malloc(cap);
    if (!rr->data)
        return -ENOMEM;
    rr->data_len = 0;
    int hi = -1;
    for (; p < end; p++) {
        if (*p == ' ' || *p == '\t')
            continue;
        int v = hexval(*p);
        if (v < 0) {
            dns_zone_set_error("bad hex digit in TLSA data");
            return -EINVAL;
        }
        if (hi < 0) {
            hi = v;
        } else {
            rr->data[rr->data_len++] = (unsigned char)(hi << 4 | v);
            hi = -1;
        }
    }
    if (hi >= 0 || rr->data_len == 0) {
        dns_zone_set_error("TLSA data must be a non-empty even number of hex digits");
        return -EINVAL;
    }
    return 0;
}

int dns_zone_put_line(struct dns_zone *z, const char *line, size_t len)
{
    if (!z)
        return -EINVAL;
    const char *end = line + len;
    while (end > line && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    const char *p = skip_blank(line, end);
    if (p == end || *p == '#' || *p == ';')
        return 0;
    const char *ne = word_end(p, end);
    char *name = strndup(p, (size_t)(ne - p));
    if (!name)
        return -ENOMEM;
    p = skip_blank(ne, end);
    const char *te = word_end(p, end);
    char type[16];
    size_t tlen = (size_t)(te - p);
    if (tlen == 0 || tlen >= sizeof type) {
        dns_zone_set_error("missing or unknown record type");
        free(name);
        return -EINVAL;
    }
    memcpy(type, p, tlen);
    type[tlen] = '\0';
    p = skip_blank(te, end);

    struct dns_rr rr;
    memset(&rr, 0, sizeof rr);
    int rc = 0;
    if (strcasecmp(type, "TIMEOUT") == 0 || strcasecmp(type, "SECURE") == 0 ||
        strcasecmp(type, "BOGUS") == 0) {
        char *norm = dns_name_normalize(name);
        struct zone_flag *f = norm ? zone_flag_get(z, norm, true) : NULL;
        free(norm);
        if (!f) {
            dns_zone_set_error("bad name '%s'", name);
            rc = -EINVAL;
        } else if (toupper((unsigned char)type[0]) == 'T') {
            f->timeout = true;
        } else {
            f->security = toupper((unsigned char)type[0]) == 'S' ? DNS_SECURE : DNS_BOGUS;
        }
        free(name);
        return rc;
    }
    char tmp[INET6_ADDRSTRLEN + 1];
    size_t vlen = (size_t)(end - p);
    if (strcasecmp(type, "A") == 0 || strcasecmp(type, "AAAA") == 0) {
        bool v6 = tlen == 4;
        rr.type = v6 ? DNS_T_AAAA : DNS_T_A;
        rr.family = v6 ? AF_INET6 : AF_INET;
        if (vlen == 0 || vlen >= sizeof tmp) {
            dns_zone_set_error("bad address");
            rc = -EINVAL;
        } else {
            memcpy(tmp, p, vlen);
            tmp[vlen] = '\0';
            if (inet_pton(rr.family, tmp, rr.addr) != 1) {
                dns_zone_set_error("bad %s address '%s'", type, tmp);
                rc = -EINVAL;
            }
        }
    } else if (strcasecmp(type, "MX") == 0) {
        rr.type = DNS_T_MX;
        const char *we = word_end(p, end);
        char *ep;
        size_t n = (size_t)(we - p);
        if (n == 0 || n >= sizeof tmp) {
            dns_zone_set_error("MX needs a preference and a host");
            rc = -EINVAL;
        } else {
            memcpy(tmp, p, n);
            tmp[n] = '\0';
            unsigned long pref = strtoul(tmp, &ep, 10);
            if (*ep || pref > 65535) {
                dns_zone_set_error("bad MX preference '%s'", tmp);
                rc = -EINVAL;
            } else {
                rr.pref = (uint16_t)pref;
                rc = parse_host_value(skip_blank(we, end), end, &rr.host);
            }
        }
    } else if (strcasecmp(type, "PTR") == 0 || strcasecmp(type, "CNAME") == 0) {
        rr.type = toupper((unsigned char)type[0]) == 'P' ? DNS_T_PTR : DNS_T_CNAME;
        rc = parse_host_value(p, end, &rr.host);
    } else if (strcasecmp(type, "TXT") == 0) {
        rr.type = DNS_T_TXT;
        rc = parse_txt_value(p, end, &rr.text, &rr.text_len);
    } else if (strcasecmp(type, "TLSA") == 0) {
        rr.type = DNS_T_TLSA;
        rc = parse_tlsa_value(p, end, &rr);
    } else {
        dns_zone_set_error("unknown record type '%s'", type);
        rc = -EINVAL;
    }
    if (rc == 0) {
        rc = dns_zone_put_rr(z, name, &rr);
        if (rc == -EINVAL)
            dns_zone_set_error("bad name '%s'", name);
    }
    dns_rr_clear(&rr);
    free(name);
    return rc;
}
