/* DNS resolver behind one API: libunbound for real lookups (sync and, for the
 * daemon, async on the libevent loop), an in-memory zone for tests and offline
 * checks (dns_zone.c), or a caller's function. Answers are decoded into
 * struct dns_rr so that DKIM, SPF, DMARC and delivery never see wire format. */
#include "mailauth/dns.h"
#include "mailauth/dns_rr.h"
#include "mailauth/dns_zone.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#define DNS_DEFAULT_ROOT_KEY "/usr/share/dns/root.key"

enum backend { BACKEND_UNBOUND, BACKEND_ZONE, BACKEND_CALLBACK };

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
    struct dns_zone *zone;
    dns_lookup_fn fn;
    void *fn_ctx;
    struct event_base *base;
    struct event *ub_ev;
    struct pending *pending;
    int next_id;
};

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

void dns_result_move(struct dns_result *dst, struct dns_result *src)
{
    *dst = *src;
    memset(src, 0, sizeof *src);
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

static struct dns_resolver *resolver_alloc(enum backend b)
{
    struct dns_resolver *r = calloc(1, sizeof *r);
    if (r)
        r->backend = b;
    return r;
}

struct dns_resolver *dns_resolver_new_zonetext(const char *text, size_t len)
{
    struct dns_resolver *r = resolver_alloc(BACKEND_ZONE);
    if (r && !(r->zone = dns_zone_new())) {
        free(r);
        r = NULL;
    }
    if (!r) {
        dns_zone_set_error("out of memory");
        return NULL;
    }
    if (dns_zone_load_text(r->zone, text, len) < 0) {
        dns_resolver_free(r);
        return NULL;
    }
    return r;
}

int dns_zone_add_line(struct dns_resolver *r, const char *line, size_t len)
{
    if (!r || r->backend != BACKEND_ZONE)
        return -EINVAL;
    return dns_zone_put_line(r->zone, line, len);
}

int dns_zone_add_rr(struct dns_resolver *r, const char *name, const struct dns_rr *rr)
{
    if (!r || r->backend != BACKEND_ZONE)
        return -EINVAL;
    return dns_zone_put_rr(r->zone, name, rr);
}

int dns_zone_add_timeout(struct dns_resolver *r, const char *name)
{
    if (!r || r->backend != BACKEND_ZONE)
        return -EINVAL;
    return dns_zone_put_timeout(r->zone, name);
}

struct dns_resolver *dns_resolver_new_zonefile(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        dns_zone_set_error("%s: %s", path, strerror(errno));
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
                dns_zone_set_error("out of memory");
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
        dns_zone_set_error("%s: read error", path);
        return NULL;
    }
    struct dns_resolver *r = dns_resolver_new_zonetext(buf ? buf : "", len);
    free(buf);
    if (!r) {
        char why[200];
        snprintf(why, sizeof why, "%s", dns_zone_last_error());
        dns_zone_set_error("%s: %s", path, why);
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
            dns_rr_clear(&rr);
            continue; /* a malformed record is skipped, the rest still count */
        }
        rr.ttl = (uint32_t)(ur->ttl > 0 ? ur->ttl : 0);
        if (dns_result_append(out, &rr) < 0) {
            dns_rr_clear(&rr);
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
        return dns_zone_answer(r->zone, name, type, out);
    case BACKEND_CALLBACK: {
        int rc = r->fn(r->fn_ctx, name, type, out);
        if (rc < 0)
            out->status = DNS_ERROR;
        return rc;
    }
    case BACKEND_UNBOUND: {
        char *norm = dns_name_normalize(name);
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
        char *norm = dns_name_normalize(name);
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
    dns_zone_free(r->zone);
    free(r);
}
