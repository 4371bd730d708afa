/* Authorisation rules applied by the SMTP session between AUTH and the spool
 * write: sender and recipient patterns, rates, quotas, sizes, header
 * From/Sender alignment and attachments. Every refusal carries a reply with
 * basic and enhanced code (RFC 3463) and a text that names the rule, so an
 * application developer can tell from the reply alone what to change. */
#include "policy/authz.h"

#include "core/config.h"
#include "policy/accounting.h"
#include "policy/creds.h"
#include "policy/mime.h"
#include "policy/pattern.h"
#include "policy/ratelimit.h"
#include "mail/address.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How much of the allowed pattern list a reply shows. */
#define ALLOWED_SHOWN_MAX 200

/* Replies go out on the wire: anything but printable ASCII becomes '?', so a
 * file name or an address cannot end the reply line or smuggle a second one. */
static void sanitise(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            *p = '?';
}

__attribute__((format(printf, 3, 4))) static int
refuse(struct authz_refusal *out, enum reject_reason why, const char *fmt, ...)
{
    out->reason = why;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reply, sizeof out->reply, fmt, ap);
    va_end(ap);
    sanitise(out->reply);
    return AUTHZ_REFUSED;
}

/* ---- pattern lists: a credential's array or a config comma list ---- */

struct patterns {
    const char *const *v; /* credential patterns ... */
    size_t n;
    const char *list; /* ... or a comma-separated config value */
};

static struct patterns sender_patterns(const struct cred *c, const struct config *cfg)
{
    if (c)
        return (struct patterns){(const char *const *)c->allow_from, c->n_allow_from, NULL};
    return (struct patterns){NULL, 0, cfg->policy_relay_allow_from};
}

static struct patterns rcpt_patterns(const struct cred *c, const struct config *cfg)
{
    if (c)
        return (struct patterns){(const char *const *)c->allow_rcpt, c->n_allow_rcpt, NULL};
    return (struct patterns){NULL, 0, cfg->policy_relay_allow_rcpt};
}

/* Calls fn on each item of a comma list with spaces trimmed; stops when fn
 * returns true. Returns whether one did. */
static bool list_any(const char *list, bool (*fn)(const char *item, size_t len, void *arg),
                     void *arg)
{
    const char *p = list ? list : "";
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        size_t len = n;
        while (len && (*s == ' ' || *s == '\t'))
            s++, len--;
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len && fn(s, len, arg))
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

static bool item_present(const char *item, size_t len, void *arg)
{
    (void)item;
    (void)len;
    (void)arg;
    return true;
}

static bool patterns_empty(const struct patterns *ps)
{
    return ps->list ? !list_any(ps->list, item_present, NULL) : ps->n == 0;
}

struct addr_arg {
    const char *addr;
    size_t len;
};

static bool item_matches_addr(const char *item, size_t len, void *arg)
{
    const struct addr_arg *a = arg;
    return pattern_match(item, len, a->addr, a->len);
}

static bool item_allows_domain(const char *item, size_t len, void *arg)
{
    const struct addr_arg *a = arg;
    char one[PATTERN_MAX + 1];
    if (len > PATTERN_MAX)
        return false;
    memcpy(one, item, len);
    one[len] = 0;
    const char *v[1] = {one};
    return pattern_domain_allowed(v, 1, a->addr, a->len);
}

static bool patterns_match(const struct patterns *ps, const char *addr)
{
    if (patterns_empty(ps))
        return true;
    struct addr_arg a = {addr, strlen(addr)};
    if (ps->list)
        return list_any(ps->list, item_matches_addr, &a);
    return pattern_list_match(ps->v, ps->n, addr, a.len);
}

static bool patterns_allow_domain(const struct patterns *ps, const char *domain)
{
    if (patterns_empty(ps))
        return true;
    struct addr_arg a = {domain, strlen(domain)};
    if (ps->list)
        return list_any(ps->list, item_allows_domain, &a);
    return pattern_domain_allowed(ps->v, ps->n, domain, a.len);
}

/* "*@shop.example, *@*.shop.example" for the reply text. */
static const char *patterns_text(const struct patterns *ps, char *buf, size_t size)
{
    if (ps->list) {
        snprintf(buf, size, "%s", ps->list);
    } else {
        size_t used = 0;
        buf[0] = 0;
        for (size_t i = 0; i < ps->n && used < size; i++) {
            int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", ps->v[i]);
            if (n < 0)
                break;
            used += (size_t)n;
        }
    }
    if (strlen(buf) >= ALLOWED_SHOWN_MAX)
        strcpy(buf + ALLOWED_SHOWN_MAX - 4, "...");
    return buf;
}

/* "credential 'shop'" or "unauthenticated relay clients" */
static const char *who_text(const struct cred *c, char *buf, size_t size)
{
    if (c)
        snprintf(buf, size, "credential '%s'", c->name);
    else
        snprintf(buf, size, "unauthenticated relay clients");
    return buf;
}

/* ---- envelope ---- */

long long authz_size_limit(const struct cred *c, const struct config *cfg)
{
    long long limit = cfg->max_message_size;
    if (c && c->max_size > 0 && c->max_size < limit)
        limit = c->max_size;
    return limit;
}

int authz_mail(const struct cred *c, const struct config *cfg, const struct smtp_path *sender,
               long long declared_size, struct authz_refusal *out)
{
    char who[CRED_NAME_MAX + 32], allowed[ALLOWED_SHOWN_MAX + 1024];
    if (c && c->revoked)
        return refuse(out, REJECT_UNAUTHENTICATED,
                      "530 5.7.0 Credential '%s' has been revoked; authentication required",
                      c->name);
    struct patterns ps = sender_patterns(c, cfg);
    if (!patterns_match(&ps, sender->addr))
        return refuse(out, REJECT_SENDER, "550 5.7.1 Sender <%s> not allowed for %s (allowed: %s)",
                      sender->addr, who_text(c, who, sizeof who),
                      patterns_text(&ps, allowed, sizeof allowed));
    if (c && c->max_size > 0 && declared_size > c->max_size)
        return refuse(out, REJECT_SIZE,
                      "552 5.3.4 Message size %lld exceeds the credential's limit of %lld bytes",
                      declared_size, c->max_size);
    return 0;
}

/* The local part as the parser kept it (quotes included). */
static bool local_has(const struct smtp_path *p, const char *chars)
{
    for (size_t i = 0; i < p->local_len; i++)
        if (strchr(chars, p->addr[i]))
            return true;
    return false;
}

int authz_rcpt(const struct cred *c, const struct config *cfg, const struct smtp_path *rcpt,
               struct authz_refusal *out)
{
    char who[CRED_NAME_MAX + 32], allowed[ALLOWED_SHOWN_MAX + 1024];
    if (rcpt->local_quoted && local_has(rcpt, "@%!"))
        return refuse(out, REJECT_RECIPIENT,
                      "550 5.7.1 Recipient refused: a quoted local part with '@', '%%' or '!' "
                      "could route through this relay");
    if (!rcpt->local_quoted && local_has(rcpt, "%"))
        return refuse(out, REJECT_RECIPIENT,
                      "550 5.7.1 Recipient refused: '%%' in the local part (the percent hack) "
                      "could route through this relay");
    if (!rcpt->local_quoted && local_has(rcpt, "!"))
        return refuse(out, REJECT_RECIPIENT,
                      "550 5.7.1 Recipient refused: '!' in the local part (a bang path) could "
                      "route through this relay");
    struct patterns ps = rcpt_patterns(c, cfg);
    if (!patterns_match(&ps, rcpt->addr))
        return refuse(out, REJECT_RECIPIENT, "550 5.7.1 Recipient not allowed for %s (allowed: %s)",
                      who_text(c, who, sizeof who), patterns_text(&ps, allowed, sizeof allowed));
    return 0;
}

/* ---- rates and quotas ---- */

static bool rate_take(struct ratelimit *rl, const char *kind, const char *what, const char *key,
                      const struct rate_spec *spec, uint64_t now_ms, struct authz_refusal *out)
{
    char k[RATELIMIT_KEY_MAX + 1];
    struct rate_verdict v;
    snprintf(k, sizeof k, "%s:%s", kind, key);
    if (ratelimit_take(rl, k, spec, 1, now_ms, &v) < 0 || v.allowed)
        return true; /* a bad key or spec limits nothing */
    out->reason = REJECT_RATE;
    if (ratelimit_reply(spec, &v, what, key, out->reply, sizeof out->reply) < 0)
        snprintf(out->reply, sizeof out->reply, "450 4.7.1 Rate limit exceeded; try again in %u s",
                 (unsigned)v.retry_after_s);
    sanitise(out->reply);
    return false;
}

int authz_rate(struct ratelimit *rl, const struct cred *c, const char *client_ip,
               const char *rate_per_ip, uint64_t now_ms, struct authz_refusal *out)
{
    if (!rl)
        return 0;
    if (c && c->rate.count > 0 && c->rate.per != CRED_PER_NONE) {
        struct rate_spec spec = {(uint64_t)c->rate.count,
                                 (uint64_t)cred_period_seconds(c->rate.per) * 1000u};
        if (!rate_take(rl, "c", "credential", c->name, &spec, now_ms, out))
            return AUTHZ_REFUSED;
    }
    struct rate_spec ip_spec;
    if (client_ip && rate_per_ip && *rate_per_ip && strcmp(rate_per_ip, "0") != 0 &&
        strcasecmp(rate_per_ip, "none") != 0 &&
        rate_spec_parse(rate_per_ip, strlen(rate_per_ip), &ip_spec) == 0 &&
        !rate_take(rl, "a", "address", client_ip, &ip_spec, now_ms, out))
        return AUTHZ_REFUSED;
    return 0;
}

/* Start of the quota period after the one holding now. */
static time_t next_period(enum cred_period per, time_t now)
{
    time_t start = accounting_period_start(per, now);
    if (per != CRED_PER_MONTH)
        return start + 86400;
    struct tm tm;
    gmtime_r(&start, &tm);
    tm.tm_mon++;
    return timegm(&tm); /* normalises December + 1 */
}

int authz_shared_rate(struct accounting *a, const struct cred *c, time_t now,
                      struct authz_refusal *out)
{
    unsigned retry = 0;
    if (accounting_rate_take(a, c, now, &retry) != 0)
        return 0;
    char lim[48];
    return refuse(out, REJECT_RATE,
                  "450 4.7.1 Rate limit of %s for credential '%s' reached across all relays; try "
                  "again in %u s",
                  cred_limit_format(&c->rate, lim, sizeof lim), c->name, retry);
}

int authz_quota(struct accounting *a, const struct cred *c, time_t now, struct authz_refusal *out)
{
    return authz_quota_reserve(a, c, now, NULL, out);
}

int authz_quota_reserve(struct accounting *a, const struct cred *c, time_t now,
                        struct quota_ticket *t, struct authz_refusal *out)
{
    if (!a || !c || c->quota.count <= 0)
        return 0;
    int taken = accounting_quota_reserve(a, c, now, t);
    if (taken == 1)
        return 0;
    if (taken < 0)
        /* RFC 3463 X.4.3 (system not available): never accept without the
         * quota check; the client retries and the mail waits with it */
        return refuse(out, REJECT_QUOTA,
                      "451 4.3.0 Quota check for credential '%s' unavailable (credential store "
                      "not answering); try again later",
                      c->name);
    char when[32];
    time_t reset = next_period(c->quota.per, now);
    struct tm tm;
    gmtime_r(&reset, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* RFC 3463 X.7.1: refused by policy; 452 so the client retries later */
    return refuse(out, REJECT_QUOTA,
                  "452 4.7.1 %s quota of %lld messages for credential '%s' reached; resets at %s",
                  c->quota.per == CRED_PER_MONTH ? "Monthly" : "Daily", c->quota.count, c->name,
                  when);
}

int authz_size(const struct cred *c, const struct config *cfg, size_t size,
               struct authz_refusal *out)
{
    (void)cfg;
    if (c && c->max_size > 0 && (long long)size > c->max_size)
        return refuse(out, REJECT_SIZE,
                      "552 5.3.4 Message size exceeds the credential's limit of %lld bytes",
                      c->max_size);
    return 0;
}

/* ---- header ---- */

struct header_arg {
    const char *msg;
    size_t len;
    char *missing;
    size_t missing_size;
};

static bool header_missing(const char *item, size_t len, void *arg)
{
    struct header_arg *h = arg;
    char name[128], value[8];
    if (len >= sizeof name)
        return false;
    memcpy(name, item, len);
    name[len] = 0;
    if (mime_header_get(h->msg, h->len, name, 0, value, sizeof value) != 0)
        return false; /* present (-1: present but longer than value) */
    snprintf(h->missing, h->missing_size, "%s", name);
    return true;
}

/* Checks every field called name; true when each mailbox domain is
 * allowed, else a refusal in out. */
static bool field_domains_allowed(const struct cred *c, const struct patterns *ps, const char *msg,
                                  size_t len, const char *name, struct authz_refusal *out)
{
    char who[CRED_NAME_MAX + 32];
    char *value = malloc(AUTHZ_FIELD_MAX);
    struct mime_address_list *list = malloc(sizeof *list);
    bool ok = value && list;
    if (!ok)
        refuse(out, REJECT_STORAGE, "451 4.3.0 Out of memory checking the header; try again");
    int count = ok ? mime_header_get(msg, len, name, 0, value, AUTHZ_FIELD_MAX) : 0;
    for (int nth = 0; ok && nth < count; nth++) {
        if (nth > 0 && mime_header_get(msg, len, name, (unsigned)nth, value, AUTHZ_FIELD_MAX) < 0)
            count = -1;
        if (count < 0) {
            ok = false;
            refuse(out, REJECT_HEADER_FROM, "550 5.7.1 Header %s too long to check for %s", name,
                   who_text(c, who, sizeof who));
            break;
        }
        int n = mime_address_domains(value, strlen(value), list);
        if (n <= 0 || n > MIME_MAX_ADDRESSES) {
            ok = false;
            refuse(out, REJECT_HEADER_FROM, "550 5.7.1 Header %s cannot be checked for %s: %s",
                   name, who_text(c, who, sizeof who),
                   n > MIME_MAX_ADDRESSES ? "too many mailboxes" : "no parsable mailbox");
            break;
        }
        for (size_t i = 0; i < (size_t)n; i++) {
            if (!patterns_allow_domain(ps, list->domains[i])) {
                ok = false;
                refuse(out, REJECT_HEADER_FROM, "550 5.7.1 Header %s domain %s not allowed for %s",
                       name, list->domains[i], who_text(c, who, sizeof who));
                break;
            }
        }
    }
    if (count < 0 && ok) {
        ok = false;
        refuse(out, REJECT_HEADER_FROM, "550 5.7.1 Header %s too long to check for %s", name,
               who_text(c, who, sizeof who));
    }
    free(value);
    free(list);
    return ok;
}

int authz_headers(const struct cred *c, const struct config *cfg, const char *msg, size_t len,
                  struct authz_refusal *out)
{
    char missing[128];
    struct header_arg h = {msg, len, missing, sizeof missing};
    /* RFC 5322 3.6: From is required; others as the operator lists */
    if (list_any(cfg->policy_required_headers, header_missing, &h))
        return refuse(out, REJECT_CONTENT, "550 5.6.0 Missing required header: %s", missing);
    struct patterns ps = sender_patterns(c, cfg);
    if (patterns_empty(&ps))
        return 0;
    /* DMARC (RFC 7489 3.1) aligns on the From domain; Sender names who sent
     * it on the author's behalf, and Resent-From / Resent-Sender (RFC 5322
     * 3.6.6) are what a reader sees as the author of a resent message, so
     * all of them stay inside the credential's domains */
    static const char *const author_fields[] = {"From", "Sender", "Resent-From", "Resent-Sender"};
    for (size_t i = 0; i < sizeof author_fields / sizeof author_fields[0]; i++)
        if (!field_domains_allowed(c, &ps, msg, len, author_fields[i], out))
            return AUTHZ_REFUSED;
    return 0;
}

/* ---- content ---- */

void authz_attachments_free(struct authz_attachments *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    a->v = NULL;
    a->n = 0;
}

static bool is_attachment(const struct mime_part *p)
{
    return p->filename[0] || p->name[0] || strcmp(p->disposition, "attachment") == 0;
}

static int list_attachments(const struct mime_report *rep, struct authz_attachments *atts)
{
    size_t n = 0;
    for (size_t i = 0; i < rep->count; i++)
        n += is_attachment(&rep->parts[i]);
    if (n == 0)
        return 0;
    atts->v = calloc(n, sizeof *atts->v);
    if (!atts->v)
        return -1;
    for (size_t i = 0; i < rep->count; i++) {
        const struct mime_part *p = &rep->parts[i];
        if (!is_attachment(p))
            continue;
        const char *name = p->filename[0] ? p->filename : p->name;
        size_t len = strlen(name) + strlen(p->content_type) + 32;
        char *s = malloc(len);
        if (!s)
            return -1;
        snprintf(s, len, "%s;%s;%zu", name, p->content_type, p->size);
        /* ';' separates the fields: a name may not carry one */
        for (char *q = s + strlen(name); q > s;)
            if (*--q == ';')
                *q = '_';
        atts->v[atts->n++] = s;
    }
    return 0;
}

int authz_content(const struct config *cfg, const char *msg, size_t len, struct authz_refusal *out,
                  struct authz_attachments *atts)
{
    struct mime_report rep = {0};
    if (atts)
        *atts = (struct authz_attachments){0};
    int r = mime_scan(msg, len, &rep);
    if (r == -1) {
        mime_report_free(&rep);
        return refuse(out, REJECT_STORAGE,
                      "451 4.3.0 Out of memory checking the message; try again");
    }
    char why[AUTHZ_REPLY_MAX - 64];
    if (mime_blocked(&rep, cfg->policy_blocked_extensions, cfg->policy_blocked_types, why,
                     sizeof why) == 1) {
        mime_report_free(&rep);
        /* RFC 3463 X.7.1: delivery not authorised, message refused */
        return refuse(out, REJECT_CONTENT, "554 5.7.1 Message refused: %s", why);
    }
    if (atts && list_attachments(&rep, atts) < 0) {
        authz_attachments_free(atts);
        mime_report_free(&rep);
        return refuse(out, REJECT_STORAGE,
                      "451 4.3.0 Out of memory checking the message; try again");
    }
    mime_report_free(&rep);
    return 0;
}
