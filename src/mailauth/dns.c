/* DNS resolver behind one API: libunbound for real lookups (sync and, for the
 * daemon, async on the libevent loop), an in-memory zone for tests and offline
 * checks, or a caller's function. Answers are decoded here into struct dns_rr
 * so that DKIM, SPF, DMARC and delivery never see wire format. */
#include "mailauth/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

/* RFC 1035 §2.3.4: 63 octets per label, 255 per name on the wire (253 as text). */
#define DNS_MAX_LABEL 63
#define DNS_MAX_NAME_TEXT 253
/* RFC 1034 §3.6.2: CNAME chains are followed; a bound stops loops. */
#define DNS_MAX_CNAME_HOPS 8

#define DNS_DEFAULT_ROOT_KEY "/usr/share/dns/root.key"

enum backend { BACKEND_UNBOUND, BACKEND_ZONE, BACKEND_CALLBACK };

struct zone_record {
    char *name; /* lower-case, no trailing dot */
    struct dns_rr rr;
};

struct zone_flag {
    char *name;
    bool timeout;
    enum dns_security security;
};

struct pending {
    struct pending *next;
    struct dns_resolver *r;
    int id;
    int ub_id;        /* unbound's id (BACKEND_UNBOUND) */
    struct event *ev; /* deferred answer (other backends) */
    char *name;
    enum dns_type type;
    dns_callback cb;
    void *arg;
};

struct dns_resolver {
    enum backend backend;
    struct ub_ctx *ub;
    struct zone_record *recs;
    size_t nrecs, caprecs;
    struct zone_flag *flags;
    size_t nflags, capflags;
    dns_lookup_fn fn;
    void *fn_ctx;
    struct event_base *base;
    struct event *ub_ev;
    struct pending *pending;
    int next_id;
};

static _Thread_local char zone_error[200];

const char *dns_zone_last_error(void)
{
    return zone_error;
}

static void set_zone_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_zone_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(zone_error, sizeof zone_error, fmt, ap);
    va_end(ap);
}

const char *dns_status_name(enum dns_status s)
{
    switch (s) {
    case DNS_OK:
        return "ok";
    case DNS_NXDOMAIN:
        return "nxdomain";
    case DNS_NODATA:
        return "nodata";
    case DNS_TEMPFAIL:
        return "tempfail";
    case DNS_ERROR:
        return "error";
    }
    return "error";
}

const char *dns_security_name(enum dns_security s)
{
    switch (s) {
    case DNS_SECURE:
        return "secure";
    case DNS_BOGUS:
        return "bogus";
    case DNS_INSECURE:
        return "insecure";
    }
    return "insecure";
}

static void rr_clear(struct dns_rr *rr)
{
    free(rr->host);
    free(rr->text);
    free(rr->data);
    memset(rr, 0, sizeof *rr);
}

void dns_result_clear(struct dns_result *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->count; i++)
        rr_clear(&res->rr[i]);
    free(res->rr);
    free(res->canonname);
    memset(res, 0, sizeof *res);
}

void dns_result_move(struct dns_result *dst, struct dns_result *src)
{
    *dst = *src;
    memset(src, 0, sizeof *src);
}

static int rr_copy(struct dns_rr *dst, const struct dns_rr *src)
{
    *dst = *src;
    dst->host = NULL;
    dst->text = NULL;
    dst->data = NULL;
    if (src->host && !(dst->host = strdup(src->host)))
        goto oom;
    if (src->text) {
        if (!(dst->text = malloc(src->text_len + 1)))
            goto oom;
        memcpy(dst->text, src->text, src->text_len);
        dst->text[src->text_len] = '\0';
    }
    if (src->data && src->data_len) {
        if (!(dst->data = malloc(src->data_len)))
            goto oom;
        memcpy(dst->data, src->data, src->data_len);
    }
    return 0;
oom:
    rr_clear(dst);
    return -ENOMEM;
}

static int result_append(struct dns_result *res, struct dns_rr *rr)
{
    struct dns_rr *n = realloc(res->rr, (res->count + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    res->rr = n;
    res->rr[res->count++] = *rr;
    memset(rr, 0, sizeof *rr);
    return 0;
}

/* Lower-case copy without a trailing dot; NULL when the name is not a valid
 * query name (empty label, label or name too long). */
static char *normalize_name(const char *name)
{
    size_t len = strlen(name);
    if (len > 1 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_MAX_NAME_TEXT)
        return NULL;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (label == 0)
                return NULL;
            label = 0;
        } else if (++label > DNS_MAX_LABEL) {
            return NULL;
        }
    }
    if (label == 0)
        return NULL;
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    out[len] = '\0';
    return out;
}

int dns_reverse_name(int family, const unsigned char *addr, char *buf, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t pos = 0;
    if (family == AF_INET) {
        int n = snprintf(buf, size, "%u.%u.%u.%u.in-addr.arpa", addr[3], addr[2], addr[1], addr[0]);
        return (n < 0 || (size_t)n >= size) ? -ENOSPC : 0;
    }
    if (family != AF_INET6)
        return -EINVAL;
    if (size < 64 + sizeof "ip6.arpa")
        return -ENOSPC;
    for (int i = 15; i >= 0; i--) {
        buf[pos++] = hex[addr[i] & 0xf];
        buf[pos++] = '.';
        buf[pos++] = hex[addr[i] >> 4];
        buf[pos++] = '.';
    }
    memcpy(buf + pos, "ip6.arpa", sizeof "ip6.arpa");
    return 0;
}

/* ------------------------------------------------------------------ zone */

static struct dns_resolver *resolver_alloc(enum backend b)
{
    struct dns_resolver *r = calloc(1, sizeof *r);
    if (r)
        r->backend = b;
    return r;
}

static struct zone_flag *zone_flag_get(struct dns_resolver *r, const char *name, bool create)
{
    for (size_t i = 0; i < r->nflags; i++)
        if (strcmp(r->flags[i].name, name) == 0)
            return &r->flags[i];
    if (!create)
        return NULL;
    if (r->nflags == r->capflags) {
        size_t cap = r->capflags ? r->capflags * 2 : 8;
        struct zone_flag *n = realloc(r->flags, cap * sizeof *n);
        if (!n)
            return NULL;
        r->flags = n;
        r->capflags = cap;
    }
    struct zone_flag *f = &r->flags[r->nflags];
    memset(f, 0, sizeof *f);
    if (!(f->name = strdup(name)))
        return NULL;
    r->nflags++;
    return f;
}

int dns_zone_add_rr(struct dns_resolver *r, const char *name, const struct dns_rr *rr)
{
    if (!r || r->backend != BACKEND_ZONE || !name || !rr)
        return -EINVAL;
    char *norm = normalize_name(name);
    if (!norm)
        return -EINVAL;
    if (r->nrecs == r->caprecs) {
        size_t cap = r->caprecs ? r->caprecs * 2 : 16;
        struct zone_record *n = realloc(r->recs, cap * sizeof *n);
        if (!n) {
            free(norm);
            return -ENOMEM;
        }
        r->recs = n;
        r->caprecs = cap;
    }
    struct zone_record *rec = &r->recs[r->nrecs];
    if (rr_copy(&rec->rr, rr) < 0) {
        free(norm);
        return -ENOMEM;
    }
    rec->name = norm;
    r->nrecs++;
    return 0;
}

int dns_zone_add_timeout(struct dns_resolver *r, const char *name)
{
    if (!r || r->backend != BACKEND_ZONE)
        return -EINVAL;
    char *norm = normalize_name(name);
    if (!norm)
        return -EINVAL;
    struct zone_flag *f = zone_flag_get(r, norm, true);
    free(norm);
    if (!f)
        return -ENOMEM;
    f->timeout = true;
    return 0;
}

/* A name exists when it owns records or is an ancestor of one that does
 * (RFC 8020: an empty non-terminal is not NXDOMAIN). */
static bool zone_name_exists(const struct dns_resolver *r, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < r->nrecs; i++) {
        const char *owner = r->recs[i].name;
        size_t olen = strlen(owner);
        if (olen == nlen && memcmp(owner, name, nlen) == 0)
            return true;
        if (olen > nlen && owner[olen - nlen - 1] == '.' &&
            memcmp(owner + olen - nlen, name, nlen) == 0)
            return true;
    }
    for (size_t i = 0; i < r->nflags; i++)
        if (strcmp(r->flags[i].name, name) == 0)
            return true;
    return false;
}

static int zone_lookup(struct dns_resolver *r, const char *qname, enum dns_type type,
                       struct dns_result *out)
{
    char *name = normalize_name(qname);
    if (!name) {
        out->status = DNS_ERROR;
        return -EINVAL;
    }
    for (int hop = 0; hop <= DNS_MAX_CNAME_HOPS; hop++) {
        const struct zone_flag *f = zone_flag_get(r, name, false);
        if (f && f->security > out->security)
            out->security = f->security;
        if ((f && f->timeout) || out->security == DNS_BOGUS) {
            out->status = DNS_TEMPFAIL;
            free(name);
            return 0;
        }
        const char *cname = NULL;
        for (size_t i = 0; i < r->nrecs; i++) {
            const struct zone_record *rec = &r->recs[i];
            if (strcmp(rec->name, name) != 0)
                continue;
            if (rec->rr.type == type) {
                struct dns_rr copy;
                if (rr_copy(&copy, &rec->rr) < 0 || result_append(out, &copy) < 0) {
                    rr_clear(&copy);
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
            char *next = normalize_name(cname);
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
        out->status = zone_name_exists(r, name) ? DNS_NODATA : DNS_NXDOMAIN;
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
                set_zone_error("text outside quotes in TXT value");
                goto bad;
            }
            p++;
            for (;;) {
                if (p >= end) {
                    set_zone_error("unterminated quoted string");
                    goto bad;
                }
                char c = *p++;
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (p >= end) {
                        set_zone_error("backslash at end of line");
                        goto bad;
                    }
                    if (isdigit((unsigned char)*p)) {
                        if (end - p < 3 || !isdigit((unsigned char)p[1]) ||
                            !isdigit((unsigned char)p[2])) {
                            set_zone_error("\\DDD escape needs three digits");
                            goto bad;
                        }
                        int v = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
                        if (v > 255) {
                            set_zone_error("\\DDD escape above 255");
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
    set_zone_error("out of memory");
bad:
    free(buf);
    return -EINVAL;
}

static int parse_host_value(const char *p, const char *end, char **host)
{
    const char *we = word_end(p, end);
    if (we == p) {
        set_zone_error("missing host name");
        return -EINVAL;
    }
    if (skip_blank(we, end) != end) {
        set_zone_error("extra text after host name");
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
            set_zone_error("TLSA needs usage, selector, matching type and data");
            return -EINVAL;
        }
        memcpy(tmp, p, n);
        tmp[n] = '\0';
        f[i] = strtoul(tmp, &ep, 10);
        if (*ep || f[i] > 255) {
            set_zone_error("bad TLSA field '%s'", tmp);
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
            set_zone_error("bad hex digit in TLSA data");
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
        set_zone_error("TLSA data must be a non-empty even number of hex digits");
        return -EINVAL;
    }
    return 0;
}

int dns_zone_add_line(struct dns_resolver *r, const char *line, size_t len)
{
    if (!r || r->backend != BACKEND_ZONE)
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
        set_zone_error("missing or unknown record type");
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
        char *norm = normalize_name(name);
        struct zone_flag *f = norm ? zone_flag_get(r, norm, true) : NULL;
        free(norm);
        if (!f) {
            set_zone_error("bad name '%s'", name);
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
            set_zone_error("bad address");
            rc = -EINVAL;
        } else {
            memcpy(tmp, p, vlen);
            tmp[vlen] = '\0';
            if (inet_pton(rr.family, tmp, rr.addr) != 1) {
                set_zone_error("bad %s address '%s'", type, tmp);
                rc = -EINVAL;
            }
        }
    } else if (strcasecmp(type, "MX") == 0) {
        rr.type = DNS_T_MX;
        const char *we = word_end(p, end);
        char *ep;
        size_t n = (size_t)(we - p);
        if (n == 0 || n >= sizeof tmp) {
            set_zone_error("MX needs a preference and a host");
            rc = -EINVAL;
        } else {
            memcpy(tmp, p, n);
            tmp[n] = '\0';
            unsigned long pref = strtoul(tmp, &ep, 10);
            if (*ep || pref > 65535) {
                set_zone_error("bad MX preference '%s'", tmp);
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
        set_zone_error("unknown record type '%s'", type);
        rc = -EINVAL;
    }
    if (rc == 0) {
        rc = dns_zone_add_rr(r, name, &rr);
        if (rc == -EINVAL)
            set_zone_error("bad name '%s'", name);
    }
    rr_clear(&rr);
    free(name);
    return rc;
}

struct dns_resolver *dns_resolver_new_zonetext(const char *text, size_t len)
{
    struct dns_resolver *r = resolver_alloc(BACKEND_ZONE);
    if (!r) {
        set_zone_error("out of memory");
        return NULL;
    }
    zone_error[0] = '\0';
    const char *p = text, *end = text + len;
    unsigned lineno = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        if (dns_zone_add_line(r, p, (size_t)(le - p)) < 0) {
            char why[sizeof zone_error];
            snprintf(why, sizeof why, "%s", zone_error[0] ? zone_error : "out of memory");
            set_zone_error("line %u: %s", lineno, why);
            dns_resolver_free(r);
            return NULL;
        }
        p = nl ? nl + 1 : end;
    }
    return r;
}

struct dns_resolver *dns_resolver_new_zonefile(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_zone_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *n = realloc(buf, ncap);
            if (!n) {
                free(buf);
                fclose(f);
                set_zone_error("out of memory");
                return NULL;
            }
            buf = n;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        set_zone_error("%s: read error", path);
        return NULL;
    }
    struct dns_resolver *r = dns_resolver_new_zonetext(buf ? buf : "", len);
    free(buf);
    if (!r) {
        char why[sizeof zone_error];
        snprintf(why, sizeof why, "%s", zone_error);
        set_zone_error("%s: %s", path, why);
    }
    return r;
}

struct dns_resolver *dns_resolver_new_callback(dns_lookup_fn fn, void *ctx)
{
    if (!fn)
        return NULL;
    struct dns_resolver *r = resolver_alloc(BACKEND_CALLBACK);
    if (r) {
        r->fn = fn;
        r->fn_ctx = ctx;
    }
    return r;
}

/* --------------------------------------------------------------- unbound */

struct dns_resolver *dns_resolver_new_system(void)
{
    struct dns_resolver *r = resolver_alloc(BACKEND_UNBOUND);
    if (!r)
        return NULL;
    r->ub = ub_ctx_create();
    if (!r->ub) {
        free(r);
        return NULL;
    }
    /* Threads, not a forked process: the daemon owns its process tree. */
    ub_ctx_async(r->ub, 1);
    if (ub_ctx_resolvconf(r->ub, NULL) != 0 || ub_ctx_hosts(r->ub, NULL) != 0) {
        /* No usable resolv.conf: unbound then recurses from the root itself. */
    }
    const char *ta = getenv("SLUICE_DNS_TRUST_ANCHOR");
    if (!ta || !*ta)
        ta = DNS_DEFAULT_ROOT_KEY;
    FILE *probe = fopen(ta, "r");
    if (probe) {
        fclose(probe);
        ub_ctx_add_ta_file(r->ub, ta);
    }
    return r;
}

/* Wire-format name (uncompressed, as libunbound hands rdata) to text. */
static int wire_name(const unsigned char *p, size_t len, size_t *used, char **out)
{
    char buf[DNS_MAX_NAME_TEXT + 70];
    size_t pos = 0, i = 0;
    for (;;) {
        if (i >= len)
            return -EINVAL;
        unsigned l = p[i++];
        if (l == 0)
            break;
        if (l > DNS_MAX_LABEL || i + l > len || pos + l + 1 >= sizeof buf)
            return -EINVAL;
        if (pos)
            buf[pos++] = '.';
        memcpy(buf + pos, p + i, l);
        pos += l;
        i += l;
    }
    if (pos == 0)
        buf[pos++] = '.';
    buf[pos] = '\0';
    if (used)
        *used = i;
    *out = strdup(buf);
    return *out ? 0 : -ENOMEM;
}

static int decode_rdata(enum dns_type type, const unsigned char *d, size_t len, struct dns_rr *rr)
{
    memset(rr, 0, sizeof *rr);
    rr->type = type;
    switch (type) {
    case DNS_T_A:
        if (len != 4)
            return -EINVAL;
        rr->family = AF_INET;
        memcpy(rr->addr, d, 4);
        return 0;
    case DNS_T_AAAA:
        if (len != 16)
            return -EINVAL;
        rr->family = AF_INET6;
        memcpy(rr->addr, d, 16);
        return 0;
    case DNS_T_MX:
        if (len < 3)
            return -EINVAL;
        rr->pref = (uint16_t)(d[0] << 8 | d[1]);
        return wire_name(d + 2, len - 2, NULL, &rr->host);
    case DNS_T_PTR:
    case DNS_T_CNAME:
        return wire_name(d, len, NULL, &rr->host);
    case DNS_T_TXT: {
        char *buf = malloc(len + 1);
        size_t pos = 0;
        if (!buf)
            return -ENOMEM;
        for (size_t i = 0; i < len;) {
            size_t l = d[i++];
            if (i + l > len) {
                free(buf);
                return -EINVAL;
            }
            memcpy(buf + pos, d + i, l);
            pos += l;
            i += l;
        }
        buf[pos] = '\0';
        rr->text = buf;
        rr->text_len = pos;
        return 0;
    }
    case DNS_T_TLSA:
        if (len < 4)
            return -EINVAL;
        rr->tlsa_usage = d[0];
        rr->tlsa_selector = d[1];
        rr->tlsa_mtype = d[2];
        rr->data_len = len - 3;
        if (!(rr->data = malloc(rr->data_len)))
            return -ENOMEM;
        memcpy(rr->data, d + 3, rr->data_len);
        return 0;
    }
    return -EINVAL;
}

/* RFC 1035 §4.1.1 RCODE values. */
#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_NXDOMAIN 3

static int convert_ub_result(int err, struct ub_result *ur, enum dns_type type,
                             struct dns_result *out)
{
    if (err != 0 || !ur) {
        out->status = err == UB_NOMEM ? DNS_ERROR : DNS_TEMPFAIL;
        return err == UB_NOMEM ? -ENOMEM : 0;
    }
    out->security = ur->secure ? DNS_SECURE : ur->bogus ? DNS_BOGUS : DNS_INSECURE;
    if (ur->bogus) {
        out->status = DNS_TEMPFAIL;
        return 0;
    }
    if (ur->rcode == DNS_RCODE_NXDOMAIN || ur->nxdomain) {
        out->status = DNS_NXDOMAIN;
        return 0;
    }
    if (ur->rcode != DNS_RCODE_NOERROR) {
        out->status = DNS_TEMPFAIL;
        return 0;
    }
    if (ur->canonname && ur->qname && strcasecmp(ur->canonname, ur->qname) != 0) {
        size_t cl = strlen(ur->canonname);
        if (cl > 1 && ur->canonname[cl - 1] == '.')
            cl--;
        out->canonname = strndup(ur->canonname, cl);
    }
    for (int i = 0; ur->havedata && ur->data[i]; i++) {
        struct dns_rr rr;
        int rc = decode_rdata(type, (const unsigned char *)ur->data[i], (size_t)ur->len[i], &rr);
        if (rc == -ENOMEM) {
            dns_result_clear(out);
            out->status = DNS_ERROR;
            return -ENOMEM;
        }
        if (rc < 0) {
            rr_clear(&rr);
            continue; /* a malformed record is skipped, the rest still count */
        }
        rr.ttl = (uint32_t)(ur->ttl > 0 ? ur->ttl : 0);
        if (result_append(out, &rr) < 0) {
            rr_clear(&rr);
            dns_result_clear(out);
            out->status = DNS_ERROR;
            return -ENOMEM;
        }
    }
    out->status = out->count ? DNS_OK : DNS_NODATA;
    return 0;
}

/* ------------------------------------------------------------ entry points */

int dns_lookup(struct dns_resolver *r, const char *name, enum dns_type type, struct dns_result *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if (!r || !name) {
        out->status = DNS_ERROR;
        return -EINVAL;
    }
    switch (r->backend) {
    case BACKEND_ZONE:
        return zone_lookup(r, name, type, out);
    case BACKEND_CALLBACK: {
        int rc = r->fn(r->fn_ctx, name, type, out);
        if (rc < 0)
            out->status = DNS_ERROR;
        return rc;
    }
    case BACKEND_UNBOUND: {
        char *norm = normalize_name(name);
        if (!norm) {
            out->status = DNS_ERROR;
            return -EINVAL;
        }
        struct ub_result *ur = NULL;
        int err = ub_resolve(r->ub, norm, (int)type, 1, &ur);
        free(norm);
        int rc = convert_ub_result(err, ur, type, out);
        if (ur)
            ub_resolve_free(ur);
        return rc;
    }
    }
    out->status = DNS_ERROR;
    return -EINVAL;
}

int dns_lookup_txt(struct dns_resolver *r, const char *name, struct dns_result *out)
{
    return dns_lookup(r, name, DNS_T_TXT, out);
}

/* ----------------------------------------------------------------- async */

static void pending_unlink(struct dns_resolver *r, struct pending *p)
{
    for (struct pending **pp = &r->pending; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

static void pending_free(struct pending *p)
{
    if (p->ev)
        event_free(p->ev);
    free(p->name);
    free(p);
}

static void on_ub_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns_resolver *r = arg;
    ub_process(r->ub);
}

static void on_ub_answer(void *arg, int err, struct ub_result *ur)
{
    struct pending *p = arg;
    struct dns_result res;
    memset(&res, 0, sizeof res);
    convert_ub_result(err, ur, p->type, &res);
    if (ur)
        ub_resolve_free(ur);
    pending_unlink(p->r, p);
    dns_callback cb = p->cb;
    void *cbarg = p->arg;
    pending_free(p);
    cb(cbarg, &res);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pending *p = arg;
    struct dns_result res;
    dns_lookup(p->r, p->name, p->type, &res);
    pending_unlink(p->r, p);
    dns_callback cb = p->cb;
    void *cbarg = p->arg;
    pending_free(p);
    cb(cbarg, &res);
}

int dns_resolver_attach(struct dns_resolver *r, struct event_base *base)
{
    if (!r || !base || r->base)
        return -EINVAL;
    r->base = base;
    if (r->backend == BACKEND_UNBOUND) {
        r->ub_ev = event_new(base, ub_fd(r->ub), EV_READ | EV_PERSIST, on_ub_readable, r);
        if (!r->ub_ev || event_add(r->ub_ev, NULL) < 0) {
            if (r->ub_ev)
                event_free(r->ub_ev);
            r->ub_ev = NULL;
            r->base = NULL;
            return -ENOMEM;
        }
    }
    return 0;
}

int dns_lookup_async(struct dns_resolver *r, const char *name, enum dns_type type, dns_callback cb,
                     void *arg)
{
    if (!r || !r->base || !name || !cb)
        return -EINVAL;
    struct pending *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->r = r;
    p->type = type;
    p->cb = cb;
    p->arg = arg;
    p->id = r->next_id++;
    if (r->next_id < 0)
        r->next_id = 0;
    if (r->backend == BACKEND_UNBOUND) {
        char *norm = normalize_name(name);
        if (!norm) {
            free(p);
            return -EINVAL;
        }
        int err = ub_resolve_async(r->ub, norm, (int)type, 1, p, on_ub_answer, &p->ub_id);
        free(norm);
        if (err != 0) {
            free(p);
            return -EIO;
        }
    } else {
        struct timeval now = {0, 0};
        p->name = strdup(name);
        p->ev = evtimer_new(r->base, on_deferred, p);
        if (!p->name || !p->ev || evtimer_add(p->ev, &now) < 0) {
            pending_free(p);
            return -ENOMEM;
        }
    }
    p->next = r->pending;
    r->pending = p;
    return p->id;
}

int dns_cancel(struct dns_resolver *r, int query_id)
{
    if (!r)
        return -EINVAL;
    for (struct pending *p = r->pending; p; p = p->next) {
        if (p->id != query_id)
            continue;
        if (r->backend == BACKEND_UNBOUND)
            ub_cancel(r->ub, p->ub_id);
        pending_unlink(r, p);
        pending_free(p);
        return 0;
    }
    return -ENOENT;
}

void dns_resolver_free(struct dns_resolver *r)
{
    if (!r)
        return;
    while (r->pending) {
        struct pending *p = r->pending;
        if (r->backend == BACKEND_UNBOUND)
            ub_cancel(r->ub, p->ub_id);
        r->pending = p->next;
        pending_free(p);
    }
    if (r->ub_ev)
        event_free(r->ub_ev);
    if (r->ub)
        ub_ctx_delete(r->ub);
    for (size_t i = 0; i < r->nrecs; i++) {
        free(r->recs[i].name);
        rr_clear(&r->recs[i].rr);
    }
    free(r->recs);
    for (size_t i = 0; i < r->nflags; i++)
        free(r->flags[i].name);
    free(r->flags);
    free(r);
}
