/* Configuration values: parsing, checking, storing and formatting one
 * value of a key of the table (config_int.h). */
#include "core/config_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <stdio.h>

/* ---- allocation: running out of memory while loading the config is fatal ---- */

void *cfg_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

char *cfg_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

char *cfg_xstrndup(const char *s, size_t n)
{
    char *d = strndup(s, n);
    if (!d)
        abort();
    return d;
}

/* ---- value parsers ---- */

static int parse_digits(const char **sp, long long *out)
{
    const char *s = *sp;
    long long v = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        if (v > (LLONG_MAX - (*s - '0')) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    *sp = s;
    *out = v;
    return 0;
}

int config_parse_size(const char *s, long long *out)
{
    static const struct {
        const char *unit;
        long long mult;
    } units[] = {
        {"", 1},      {"b", 1},          {"k", KIB},         {"kb", KIB},        {"kib", KIB},
        {"m", MIB},   {"mb", MIB},       {"mib", MIB},       {"g", GIB},         {"gb", GIB},
        {"gib", GIB}, {"t", 1024 * GIB}, {"tb", 1024 * GIB}, {"tib", 1024 * GIB}};
    long long v;
    if (!s || parse_digits(&s, &v) < 0)
        return -1;
    while (*s == ' ')
        s++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(s, units[i].unit) == 0) {
            if (v > LLONG_MAX / units[i].mult)
                return -1;
            *out = v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

int config_parse_duration(const char *s, int *out)
{
    long long v, mult;
    if (!s || parse_digits(&s, &v) < 0)
        return -1;
    if (*s == '\0' || strcmp(s, "s") == 0)
        mult = 1;
    else if (strcmp(s, "m") == 0)
        mult = 60;
    else if (strcmp(s, "h") == 0)
        mult = 3600;
    else if (strcmp(s, "d") == 0)
        mult = DAY;
    else
        return -1;
    if (v > INT_MAX / mult)
        return -1;
    *out = (int)(v * mult);
    return 0;
}

/* "50/s", "2.5/s", "600/min", "3600/h"; "0" means unlimited. */
static int parse_rate(const char *s, double *out)
{
    size_t int_len = strspn(s, "0123456789"), len = int_len;
    double v;
    const char *p;
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    if (int_len == 0)
        return -1;
    if (s[len] == '.') {
        size_t frac = strspn(s + len + 1, "0123456789");
        if (frac == 0)
            return -1;
        len += 1 + frac;
    }
    if (int_len > 10 || len > 40)
        return -1;
    char num[48];
    memcpy(num, s, len);
    num[len] = '\0';
    v = strtod(num, NULL); /* only digits and one '.' reach here */
    for (p = s + len; *p == ' '; p++)
        ;
    if (*p++ != '/')
        return -1;
    while (*p == ' ')
        p++;
    if (!strcmp(p, "s") || !strcmp(p, "sec") || !strcmp(p, "second"))
        *out = v;
    else if (!strcmp(p, "m") || !strcmp(p, "min") || !strcmp(p, "minute"))
        *out = v / 60;
    else if (!strcmp(p, "h") || !strcmp(p, "hour"))
        *out = v / 3600;
    else
        return -1;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return -1;
}

static int parse_int(const char *s, long long *out)
{
    bool neg = *s == '-';
    long long v;
    if (neg)
        s++;
    if (parse_digits(&s, &v) < 0 || *s)
        return -1;
    *out = neg ? -v : v;
    return 0;
}

static int choice_index(const char *const *choices, const char *s)
{
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], s) == 0)
            return i;
    return -1;
}

/* RFC 1123 2.1 host name: labels of letters, digits and inner hyphens. */
static bool valid_hostname(const char *s, size_t len)
{
    size_t label = 0;
    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)c) || (c == '-' && label > 0)) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return s[len - 1] != '-';
}

static bool is_ip_literal(const char *s, size_t len, int *family)
{
    char buf[INET6_ADDRSTRLEN + 1];
    unsigned char addr[16];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, addr) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

bool cfg_host_is_loopback(const char *h)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(h, "localhost") == 0 || strcasecmp(h, "localhost.") == 0)
        return true;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* One network "addr/prefix" (a bare address means a single host). Only
 * checked here; net/cidr parses the list for matching. */
struct cidr_check {
    int family;
    unsigned char addr[16];
    int prefix;
};

/* Returns 0, -1 for bad syntax, -2 when bits beyond the prefix are set. */
static int parse_cidr(const char *s, size_t len, struct cidr_check *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    int bits;
    memset(out, 0, sizeof(*out));
    if (alen == 0 || alen >= sizeof(buf))
        return -1;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -1;
    bits = out->family == AF_INET ? 32 : 128;
    out->prefix = bits;
    if (slash) {
        const char *p = slash + 1;
        long long v;
        if (p == s + len || !isdigit((unsigned char)*p) || (s + len - p) > 3)
            return -1;
        char num[4] = {0};
        memcpy(num, p, (size_t)(s + len - p));
        if (parse_int(num, &v) < 0 || v > bits)
            return -1;
        out->prefix = (int)v;
    }
    for (int b = out->prefix; b < bits; b++)
        if (out->addr[b / 8] & (0x80 >> (b % 8)))
            return -2;
    return 0;
}

/* ---- one value: parse, check and store ---- */

bool cfg_is_string_type(enum value_type t)
{
    return t <= T_CHOICE || t == T_PIN || t == T_ENVNAME;
}

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return -1;
}

static void format_duration(long long v, char *buf, size_t n)
{
    if (v != 0 && v % DAY == 0)
        snprintf(buf, n, "%lldd", v / DAY);
    else if (v != 0 && v % 3600 == 0)
        snprintf(buf, n, "%lldh", v / 3600);
    else if (v != 0 && v % 60 == 0)
        snprintf(buf, n, "%lldm", v / 60);
    else
        snprintf(buf, n, "%llds", v);
}

static void format_size(long long v, char *buf, size_t n)
{
    if (v != 0 && v % GIB == 0)
        snprintf(buf, n, "%lldGiB", v / GIB);
    else if (v != 0 && v % MIB == 0)
        snprintf(buf, n, "%lldMiB", v / MIB);
    else if (v != 0 && v % KIB == 0)
        snprintf(buf, n, "%lldKiB", v / KIB);
    else
        snprintf(buf, n, "%lld", v);
}

static void format_rate(double r, char *buf, size_t n)
{
    static const struct {
        double per;
        const char *unit;
    } units[] = {{1, "s"}, {60, "min"}, {3600, "h"}};
    if (r == 0) {
        snprintf(buf, n, "0");
        return;
    }
    /* The first unit in which the rate is a whole number that reads back to
     * exactly the same value. */
    for (size_t i = 0; i < 3; i++) {
        long long whole = (long long)(r * units[i].per + 0.5);
        if (whole >= 1 && (double)whole / units[i].per == r) {
            snprintf(buf, n, "%lld/%s", whole, units[i].unit);
            return;
        }
    }
    snprintf(buf, n, "%.17g/s", r);
}

void cfg_format_range(const struct config_key *k, long long v, char *buf, size_t n)
{
    if (k->type == T_DURATION)
        format_duration(v, buf, n);
    else if (k->type == T_SIZE)
        format_size(v, buf, n);
    else
        snprintf(buf, n, "%lld", v);
}

static void join_choices(const char *const *c, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; c[i] && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? (c[i + 1] ? ", " : " or ") : "",
                                 c[i]);
}

static int check_listen(const char *v, char *why, size_t n)
{
    const char *colon, *host = v;
    size_t hlen;
    long long port;
    int family;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':')
            return fail(why, n, "expected [IPv6]:port, got '" VALUE_QUOTE "'", v);
        host = v + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
        if (!is_ip_literal(host, hlen, &family) || family != AF_INET6)
            return fail(why, n, "'%.*s' is not an IPv6 address", (int)hlen, host);
    } else {
        colon = strrchr(v, ':');
        if (!colon)
            return fail(why, n, "expected host:port, got '" VALUE_QUOTE "'", v);
        hlen = (size_t)(colon - v);
        if (memchr(v, ':', hlen))
            return fail(why, n, "IPv6 addresses need brackets, as in [::1]:2525");
        if (!is_ip_literal(host, hlen, &family))
            return fail(why, n,
                        "'%.*s' is not an IP address (listen on 127.0.0.1:2525, "
                        "0.0.0.0:587 or [::1]:2525, not on a name)",
                        (int)hlen, host);
    }
    if (parse_int(colon + 1, &port) < 0 || colon[1] == '-' || port < 1 || port > 65535)
        return fail(why, n, "port must be 1-65535, got '" VALUE_QUOTE "'", colon + 1);
    return 0;
}

static int check_cidrs(const char *v, char *why, size_t n)
{
    struct cidr_check c;
    const char *p = v;
    if (strcmp(v, "auto") == 0)
        return 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && isspace((unsigned char)*p))
            p++, len--;
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0)
            return fail(why, n, "empty entry in the network list");
        int rc = parse_cidr(p, len, &c);
        if (rc == -2)
            return fail(why, n, "'%.*s' has address bits set beyond the /%d prefix", (int)len, p,
                        c.prefix);
        if (rc < 0)
            return fail(why, n, "'%.*s' is not a valid CIDR such as 10.0.0.0/8 or fd00::/8",
                        (int)len, p);
        if (!end)
            return 0;
        p = end + 1;
    }
}

static int check_string(const struct config_key *k, const char *v, char *why, size_t n)
{
    int family;
    size_t len = strlen(v);
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return fail(why, n, "control characters are not allowed");
        if (*p == ';' && (p == v || isspace((unsigned char)p[-1])))
            return fail(why, n, "';' at the start or after a space begins a comment");
    }
    if (isspace((unsigned char)v[0]) || isspace((unsigned char)v[len - 1]))
        return fail(why, n, "leading or trailing white space is not allowed");
    switch (k->type) {
    case T_HOSTNAME:
        if (!valid_hostname(v, len))
            return fail(why, n, "'" VALUE_QUOTE "' is not a valid host name", v);
        return 0;
    case T_HOST:
        if (!is_ip_literal(v, len, &family) && !valid_hostname(v, len))
            return fail(why, n, "'" VALUE_QUOTE "' is neither an IP address nor a host name%s", v,
                        v[0] == '[' ? " (write IPv6 addresses without brackets)" : "");
        return 0;
    case T_LISTEN:
        return check_listen(v, why, n);
    case T_CIDRS:
        return check_cidrs(v, why, n);
    case T_PIN:
        if (len != 64 || strspn(v, "0123456789abcdefABCDEF") != 64)
            return fail(why, n,
                        "expected 64 hex digits (SHA-256 of the public key), got %zu "
                        "characters",
                        len);
        return 0;
    case T_ENVNAME:
        if (!(isalpha((unsigned char)v[0]) || v[0] == '_') ||
            strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != len)
            return fail(why, n, "'" VALUE_QUOTE "' is not an environment variable name", v);
        return 0;
    default:
        return 0;
    }
}

/* Lists are kept as "a, b, c" (or "a:b:c") so that a value read back from
 * a dump, where long lists are wrapped, is the same string. */
static char *canonical_list(const char *v, char sep)
{
    char *out = cfg_xrealloc(NULL, 2 * strlen(v) + 1), *o = out;
    for (const char *p = v;;) {
        const char *end = strchr(p, sep);
        const char *e = end ? end : p + strlen(p);
        while (p < e && isspace((unsigned char)*p))
            p++;
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        memcpy(o, p, (size_t)(e - p));
        o += e - p;
        if (!end)
            break;
        *o++ = sep;
        if (sep == ',')
            *o++ = ' ';
        p = end + 1;
    }
    while (o > out && o[-1] == ' ')
        o--;
    *o = '\0';
    return out;
}

static int store_string(const struct config_key *k, char **sp, const char *v, char *why, size_t n);

/* Parses `v` for key `k` into the struct at `base`. On failure leaves the old
 * value and writes the reason to why. */
int cfg_set_value(const struct config_key *k, void *base, const char *v, char *why, size_t n)
{
    void *p = (char *)base + k->offset;
    char lo[32], hi[32], list[128];
    long long ll = 0;
    int idx;
    double d;
    bool b;

    switch (k->type) {
    case T_BOOL:
        if (parse_bool(v, &b) < 0)
            return fail(why, n, "expected true/false, yes/no, on/off or 1/0, got '" VALUE_QUOTE "'",
                        v);
        *(bool *)p = b;
        return 0;
    case T_INT:
    case T_DURATION:
    case T_SIZE:
        if (k->type == T_INT && k->auto_ok && strcasecmp(v, "auto") == 0) {
            *(int *)p = CONFIG_AUTO;
            return 0;
        }
        if (k->type == T_INT && parse_int(v, &ll) < 0)
            return fail(why, n, "expected an integer%s, got '" VALUE_QUOTE "'",
                        k->auto_ok ? " or auto" : "", v);
        if (k->type == T_DURATION) {
            if (config_parse_duration(v, &idx) < 0)
                return fail(
                    why, n,
                    "expected a duration such as 90, 30s, 5m, 2h or 5d, got '" VALUE_QUOTE "'", v);
            ll = idx;
        }
        if (k->type == T_SIZE && config_parse_size(v, &ll) < 0)
            return fail(why, n,
                        "expected a size such as 1024, 10K, 25M or 1G, got '" VALUE_QUOTE "'", v);
        if (ll < k->min || ll > k->max) {
            cfg_format_range(k, k->min, lo, sizeof(lo));
            cfg_format_range(k, k->max, hi, sizeof(hi));
            return fail(why, n, "'" VALUE_QUOTE "' is out of range (%s to %s)", v, lo, hi);
        }
        if (k->type == T_SIZE)
            *(long long *)p = ll;
        else
            *(int *)p = (int)ll;
        return 0;
    case T_RATE:
        if (*v == '\0')
            d = 0;
        else if (parse_rate(v, &d) < 0)
            return fail(why, n, "expected a rate such as 50/s, 600/min or 0, got '" VALUE_QUOTE "'",
                        v);
        else if (d != 0 && (d < RATE_MIN || d > RATE_MAX))
            return fail(why, n, "'" VALUE_QUOTE "' is out of range (1/h to 1000000/s, or 0)", v);
        *(double *)p = d;
        return 0;
    case T_ENUM:
    case T_KIND:
        if ((idx = choice_index(k->choices, v)) < 0) {
            join_choices(k->choices, list, sizeof(list));
            return fail(why, n, "expected %s, got '" VALUE_QUOTE "'", list, v);
        }
        if (k->type == T_KIND)
            *(bool *)p = idx == 1;
        else
            *(int *)p = idx;
        return 0;
    default:
        break;
    }

    /* String types. */
    char **sp = p;
    char *canon = NULL;
    if (k->list_sep && *v) {
        canon = canonical_list(v, k->list_sep);
        v = canon;
    }
    int rc = store_string(k, sp, v, why, n);
    free(canon);
    return rc;
}

static int store_string(const struct config_key *k, char **sp, const char *v, char *why, size_t n)
{
    char list[128];
    if (*v == '\0') {
        if (!k->def) {
            free(*sp);
            *sp = NULL;
            return 0;
        }
        if (!k->empty_ok)
            return fail(why, n, "must not be empty");
    } else if (check_string(k, v, why, n) < 0) {
        return -1;
    } else if (k->type == T_CHOICE && choice_index(k->choices, v) < 0) {
        join_choices(k->choices, list, sizeof(list));
        return fail(why, n, "expected %s, got '" VALUE_QUOTE "'", list, v);
    }
    free(*sp);
    *sp = cfg_xstrdup(v);
    if (k->type == T_PIN)
        for (char *c = *sp; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    return 0;
}

/* Text of the current value, as a file would spell it; caller frees. */
char *cfg_format_value(const struct config_key *k, const void *base)
{
    const void *p = (const char *)base + k->offset;
    char buf[64];
    switch (k->type) {
    case T_BOOL:
        return cfg_xstrdup(*(const bool *)p ? "true" : "false");
    case T_INT:
        if (k->auto_ok && *(const int *)p == CONFIG_AUTO)
            return cfg_xstrdup("auto");
        snprintf(buf, sizeof(buf), "%d", *(const int *)p);
        return cfg_xstrdup(buf);
    case T_DURATION:
        format_duration(*(const int *)p, buf, sizeof(buf));
        return cfg_xstrdup(buf);
    case T_SIZE:
        format_size(*(const long long *)p, buf, sizeof(buf));
        return cfg_xstrdup(buf);
    case T_RATE:
        format_rate(*(const double *)p, buf, sizeof(buf));
        return cfg_xstrdup(buf);
    case T_ENUM:
        return cfg_xstrdup(k->choices[*(const int *)p]);
    case T_KIND:
        return cfg_xstrdup(k->choices[*(const bool *)p ? 1 : 0]);
    default: {
        const char *s = *(char *const *)p;
        return cfg_xstrdup(s ? s : "");
    }
    }
}
