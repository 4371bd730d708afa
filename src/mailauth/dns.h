/* DNS lookups for DKIM, SPF, DMARC and delivery (MX, TLSA). One resolver type
 * with three backends behind the same calls: the system resolver (libunbound,
 * DNSSEC-validating when a trust anchor is known), an in-memory zone read from
 * a text file (tests and offline checks; never touches the network), and a
 * caller-supplied lookup function. Synchronous calls serve the CLIs; the
 * daemon attaches the resolver to its libevent loop and uses dns_lookup_async. */
#ifndef SLUICE_MAILAUTH_DNS_H
#define SLUICE_MAILAUTH_DNS_H

#include <stddef.h>
#include <stdint.h>

/* ---- Stable entry points -------------------------------------------------
 *
 *   struct dns_resolver *dns_resolver_new_system(void);
 *       Recursive resolver from /etc/resolv.conf and /etc/hosts (libunbound).
 *       Validates DNSSEC when /usr/share/dns/root.key exists or env
 *       SLUICE_DNS_TRUST_ANCHOR names a trust-anchor file. NULL on failure.
 *   struct dns_resolver *dns_resolver_new_zonefile(const char *path);
 *       In-memory zone read from a zone file (format below). NULL on failure;
 *       dns_zone_last_error() then says which line and why.
 *   struct dns_resolver *dns_resolver_new_zonetext(const char *text, size_t len);
 *       Same, from a buffer.
 *   void dns_resolver_free(struct dns_resolver *r);
 *
 *   int dns_lookup(struct dns_resolver *r, const char *name, enum dns_type type,
 *                  struct dns_result *out);
 *   int dns_lookup_txt(struct dns_resolver *r, const char *name, struct dns_result *out);
 *       Fill *out (always initialised, even on error) and return 0 when the
 *       question got an answer of any kind (see out->status: ok, nxdomain,
 *       nodata, tempfail); return a negative errno-style code (and
 *       out->status = DNS_ERROR) for bad arguments or out of memory.
 *       TXT: each record's character-strings are concatenated, in
 *       out->rr[i].text (NUL-terminated, length out->rr[i].text_len).
 *   void dns_result_clear(struct dns_result *res);
 *       Free what a lookup put into *res; *res can be reused.
 *
 * ---- Zone file format (also `--dns-zone FILE` of the CLIs) ----------------
 *
 *   # comment (also ';'), blank lines ignored
 *   NAME TYPE VALUE
 *
 *   NAME   domain name, case-insensitive, trailing dot optional.
 *   TYPE   A       192.0.2.1
 *          AAAA    2001:db8::1
 *          MX      10 mx.example.com            (preference, exchange)
 *          PTR     host.example.com
 *          CNAME   target.example.com           (followed by lookups of other types)
 *          TXT     "v=spf1 -all"                (one record; several quoted strings
 *                  "part one" "part two"         are concatenated; \" \\ and \DDD
 *                                                escapes; an unquoted value is the
 *                                                rest of the line as one string)
 *          TLSA    3 1 1 <hex>                  (usage selector matching-type data)
 *          TIMEOUT                              (every question for NAME fails
 *                                                temporarily, like a SERVFAIL)
 *          SECURE / BOGUS                       (answers for NAME carry that DNSSEC status;
 *                                                BOGUS answers are also tempfail)
 *   A name with records but none of the asked type answers NODATA; an unknown
 *   name answers NXDOMAIN.
 */

enum dns_type {
    DNS_T_A = 1,
    DNS_T_CNAME = 5,
    DNS_T_PTR = 12,
    DNS_T_MX = 15,
    DNS_T_TXT = 16,
    DNS_T_AAAA = 28,
    DNS_T_TLSA = 52,
};

enum dns_status {
    DNS_OK = 0,       /* at least one record of the asked type */
    DNS_NXDOMAIN = 1, /* the name does not exist */
    DNS_NODATA = 2,   /* the name exists, no record of that type */
    DNS_TEMPFAIL = 3, /* SERVFAIL, timeout, DNSSEC bogus: try again later */
    DNS_ERROR = 4,    /* the question itself was wrong (bad name) or no memory */
};

enum dns_security {
    DNS_INSECURE = 0, /* no DNSSEC chain (or no validation configured) */
    DNS_SECURE = 1,   /* validated */
    DNS_BOGUS = 2,    /* validation failed */
};

struct dns_rr {
    enum dns_type type;
    uint32_t ttl;
    /* A / AAAA */
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* 4 or 16 bytes, network order */
    /* MX */
    uint16_t pref;
    /* MX exchange, PTR target, CNAME target: no trailing dot */
    char *host;
    /* TXT: strings of one record concatenated, NUL-terminated */
    char *text;
    size_t text_len;
    /* TLSA */
    uint8_t tlsa_usage, tlsa_selector, tlsa_mtype;
    unsigned char *data; /* association data */
    size_t data_len;
};

struct dns_result {
    enum dns_status status;
    enum dns_security security;
    size_t count;      /* records in rr[] (only when status == DNS_OK) */
    struct dns_rr *rr; /* owned; dns_result_clear frees */
    char *canonname;   /* name after CNAMEs, when one was followed (else NULL) */
};

struct dns_resolver;

struct dns_resolver *dns_resolver_new_system(void);
struct dns_resolver *dns_resolver_new_zonefile(const char *path);
struct dns_resolver *dns_resolver_new_zonetext(const char *text, size_t len);
void dns_resolver_free(struct dns_resolver *r);

/* Text of the last zone-file error of this thread ("line 3: bad IPv4 address"). */
const char *dns_zone_last_error(void);

/* Add records to an in-memory zone resolver (zonefile/zonetext): one zone
 * line as above, or a record built by the caller. Returns 0 or -EINVAL (not
 * a zone resolver, bad line). dns_zone_add_rr copies what it is given. */
int dns_zone_add_line(struct dns_resolver *r, const char *line, size_t len);
int dns_zone_add_rr(struct dns_resolver *r, const char *name, const struct dns_rr *rr);
int dns_zone_add_timeout(struct dns_resolver *r, const char *name);

/* A resolver that asks a caller's function (used by tests to count questions
 * or inject failures). The function fills *out like dns_lookup and returns 0
 * or a negative code. */
typedef int (*dns_lookup_fn)(void *ctx, const char *name, enum dns_type type,
                             struct dns_result *out);
struct dns_resolver *dns_resolver_new_callback(dns_lookup_fn fn, void *ctx);

int dns_lookup(struct dns_resolver *r, const char *name, enum dns_type type,
               struct dns_result *out);
int dns_lookup_txt(struct dns_resolver *r, const char *name, struct dns_result *out);
void dns_result_clear(struct dns_result *res);
/* Move a result: *dst takes ownership, *src is left empty. */
void dns_result_move(struct dns_result *dst, struct dns_result *src);

/* Reverse-lookup name for an address: "4.3.2.1.in-addr.arpa" or the 32-nibble
 * ip6.arpa form. Returns 0 or -ENOSPC. */
int dns_reverse_name(int family, const unsigned char *addr, char *buf, size_t size);

const char *dns_status_name(enum dns_status s);     /* "ok", "nxdomain", ... */
const char *dns_security_name(enum dns_security s); /* "secure", "insecure", "bogus" */

/* ---- Asynchronous use from the daemon's libevent loop ---------------------
 *
 * dns_resolver_attach registers the resolver with the loop (for the system
 * backend: an event on ub_fd(); the other backends answer from a zero-timeout
 * event so callers always see the callback after dns_lookup_async returned).
 * The callback owns *res: it must dns_result_clear() it (or dns_result_move
 * it elsewhere). dns_lookup_async returns a query id >= 0 or a negative code;
 * dns_cancel(id) stops a pending query (its callback is never called). */
struct event_base;
typedef void (*dns_callback)(void *arg, struct dns_result *res);
int dns_resolver_attach(struct dns_resolver *r, struct event_base *base);
int dns_lookup_async(struct dns_resolver *r, const char *name, enum dns_type type, dns_callback cb,
                     void *arg);
int dns_cancel(struct dns_resolver *r, int query_id);

#endif
