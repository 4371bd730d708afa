/* TLS-RPT (RFC 8460) record parser, aggregate report reader and report
 * email unpacking. The record decides whether check-domain reports a
 * domain's TLS reporting as set up; the report side turns what receivers
 * mail back into structs. */
#include "mailauth/tlsrpt.h"
#include "core/base64.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#define TLSRPT_EXT_NAME_MAX 32 /* RFC 8460 3: tlsrpt-ext-name, 1 + 31 characters */
#define GZIP_MIN_MEMBER 18     /* RFC 1952 2.3: 10-byte header + 8-byte trailer */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* ---- _smtp._tls record ------------------------------------------------------------ */

bool tlsrpt_record_is_tlsrpt(const char *txt, size_t len)
{
    size_t v = sizeof(TLSRPT_VERSION) - 1;
    if (!txt || len < v || memcmp(txt, TLSRPT_VERSION, v) != 0)
        return false;
    return len == v || txt[v] == ';' || is_wsp(txt[v]);
}

void tlsrpt_record_clear(struct tlsrpt_record *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nrua; i++)
        free(r->rua[i]);
    free(r->rua);
    memset(r, 0, sizeof(*r));
}

/* RFC 8460 3: tlsrpt-uri is a URI whose scheme is mailto or https. */
static bool valid_rua_uri(const char *s, size_t len, char *err, size_t errlen)
{
    if (len > 7 && strncasecmp(s, "mailto:", 7) == 0) {
        const char *at = memchr(s + 7, '@', len - 7);
        if (at && at > s + 7 && at < s + len - 1)
            return true;
        seterr(err, errlen, "rua '%.*s' has no address", (int)len, s);
        return false;
    }
    if (len > 8 && strncasecmp(s, "https://", 8) == 0) {
        if (s[8] != '/' && s[8] != '?' && s[8] != '#')
            return true;
        seterr(err, errlen, "rua '%.*s' has no host", (int)len, s);
        return false;
    }
    seterr(err, errlen, "rua '%.*s' is neither mailto: nor https:", (int)len, s);
    return false;
}

static int parse_rua(const char *v, size_t vlen, struct tlsrpt_record *out, char *err,
                     size_t errlen)
{
    size_t pos = 0;
    while (pos <= vlen) {
        const char *comma = memchr(v + pos, ',', vlen - pos);
        size_t stop = comma ? (size_t)(comma - v) : vlen;
        size_t a = pos, b = stop;
        while (a < b && is_wsp(v[a]))
            a++;
        while (b > a && is_wsp(v[b - 1]))
            b--;
        pos = stop + 1;
        if (a == b) {
            seterr(err, errlen, "empty URI in rua=");
            return -EINVAL;
        }
        for (size_t i = a; i < b; i++)
            if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f) {
                seterr(err, errlen, "rua URI '%.*s' holds a space or non-ASCII byte", (int)(b - a),
                       v + a);
                return -EINVAL;
            }
        if (!valid_rua_uri(v + a, b - a, err, errlen))
            return -EINVAL;
        char **n = realloc(out->rua, (out->nrua + 1) * sizeof(*n));
        if (!n)
            return -ENOMEM;
        out->rua = n;
        if (!(n[out->nrua] = strndup(v + a, b - a)))
            return -ENOMEM;
        out->nrua++;
    }
    return 0;
}

int tlsrpt_record_parse(const char *txt, size_t len, struct tlsrpt_record *out, char *err,
                        size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!txt || !tlsrpt_record_is_tlsrpt(txt, len)) {
        seterr(err, errlen, "record does not start with v=TLSRPTv1");
        return -EINVAL;
    }
    bool first = true, have_rua = false;
    size_t pos = 0;
    int rc = 0;
    while (pos <= len && rc == 0) {
        const char *semi = memchr(txt + pos, ';', len - pos);
        size_t stop = semi ? (size_t)(semi - txt) : len;
        size_t a = pos, b = stop;
        while (a < b && is_wsp(txt[a]))
            a++;
        while (b > a && is_wsp(txt[b - 1]))
            b--;
        pos = stop + 1;
        if (first) {
            first = false;
            if (b - a != sizeof(TLSRPT_VERSION) - 1) {
                seterr(err, errlen, "the first field must be exactly v=TLSRPTv1");
                rc = -EINVAL;
            }
            continue;
        }
        if (a == b)
            continue;
        const char *eq = memchr(txt + a, '=', b - a);
        size_t nlen = eq ? (size_t)(eq - (txt + a)) : 0;
        if (!eq || nlen == 0 || nlen > TLSRPT_EXT_NAME_MAX || !is_alnum(txt[a])) {
            seterr(err, errlen, "field '%.*s' is not name=value", (int)(b - a), txt + a);
            rc = -EINVAL;
            break;
        }
        const char *v = eq + 1;
        size_t vlen = b - (size_t)(v - txt);
        if (nlen == 3 && memcmp(txt + a, "rua", 3) == 0) {
            if (have_rua) {
                seterr(err, errlen, "rua= given twice");
                rc = -EINVAL;
                break;
            }
            have_rua = true;
            rc = parse_rua(v, vlen, out, err, errlen);
            continue;
        }
        for (size_t i = 0; i < nlen; i++)
            if (!is_alnum(txt[a + i]) && txt[a + i] != '_' && txt[a + i] != '-' &&
                txt[a + i] != '.') {
                seterr(err, errlen, "bad field name '%.*s'", (int)nlen, txt + a);
                rc = -EINVAL;
            }
        /* RFC 8460 3 tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E) */
        if (vlen == 0 && rc == 0) {
            seterr(err, errlen, "field '%.*s' has no value", (int)nlen, txt + a);
            rc = -EINVAL;
        }
        for (size_t i = 0; i < vlen && rc == 0; i++) {
            unsigned char c = (unsigned char)v[i];
            if (c < 0x21 || c > 0x7e || c == 0x3b || c == 0x3d) {
                seterr(err, errlen, "bad value in field '%.*s'", (int)nlen, txt + a);
                rc = -EINVAL;
            }
        }
    }
    if (rc == 0 && !have_rua) {
        seterr(err, errlen, "no rua= field (where reports should go)");
        rc = -EINVAL;
    }
    if (rc != 0)
        tlsrpt_record_clear(out);
    return rc;
}

int tlsrpt_record_select(const char *const *txts, const size_t *lens, size_t n,
                         struct tlsrpt_record *out, char *err, size_t errlen)
{
    size_t found = 0, which = 0;
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++)
        if (tlsrpt_record_is_tlsrpt(txts[i], lens[i])) {
            found++;
            which = i;
        }
    if (found == 0) {
        seterr(err, errlen, "no v=TLSRPTv1 record");
        return -ENOENT;
    }
    if (found > 1) {
        /* RFC 8460 3: not exactly one record means no reporting */
        seterr(err, errlen, "%zu v=TLSRPTv1 records (there must be exactly one)", found);
        return -EINVAL;
    }
    return tlsrpt_record_parse(txts[which], lens[which], out, err, errlen);
}

/* ---- Aggregate report JSON ----------------------------------------------------------- */

static char *dup_field(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? strdup(s) : NULL;
}

static int dup_string_array(json_t *arr, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!json_is_array(arr))
        return 0;
    size_t cnt = json_array_size(arr);
    if (cnt == 0)
        return 0;
    if (!(*out = calloc(cnt, sizeof(char *))))
        return -ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s)
            return -EINVAL;
        if (!((*out)[i] = strdup(s)))
            return -ENOMEM;
        *n = i + 1;
    }
    return 0;
}

static uint64_t count_field(json_t *obj, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(obj, key));
    return v > 0 ? (uint64_t)v : 0;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void tlsrpt_report_clear(struct tlsrpt_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->npolicies; i++) {
        struct tlsrpt_policy_result *p = &r->policies[i];
        free(p->type_text);
        free(p->policy_domain);
        free_strings(p->policy_string, p->npolicy_string);
        free_strings(p->mx_host, p->nmx_host);
        for (size_t k = 0; k < p->nfailures; k++) {
            struct tlsrpt_failure *f = &p->failures[k];
            free(f->result_type);
            free(f->sending_mta_ip);
            free(f->receiving_mx_hostname);
            free(f->receiving_ip);
            free(f->failure_reason_code);
        }
        free(p->failures);
    }
    free(r->policies);
    free(r->organization);
    free(r->contact);
    free(r->report_id);
    free(r->start);
    free(r->end);
    memset(r, 0, sizeof(*r));
}

static int parse_policy_result(json_t *pj, struct tlsrpt_policy_result *p, size_t idx, char *err,
                               size_t errlen)
{
    json_t *pol = json_object_get(pj, "policy");
    const char *type = json_string_value(json_object_get(pol, "policy-type"));
    if (!json_is_object(pol) || !type) {
        seterr(err, errlen, "policies[%zu]: no policy.policy-type", idx);
        return -EINVAL;
    }
    if (!(p->type_text = strdup(type)))
        return -ENOMEM;
    p->type = !strcmp(type, "sts")               ? TLSRPT_POLICY_STS
              : !strcmp(type, "tlsa")            ? TLSRPT_POLICY_TLSA
              : !strcmp(type, "no-policy-found") ? TLSRPT_POLICY_NO_POLICY_FOUND
                                                 : TLSRPT_POLICY_OTHER;
    p->policy_domain = dup_field(pol, "policy-domain");
    int rc = dup_string_array(json_object_get(pol, "policy-string"), &p->policy_string,
                              &p->npolicy_string);
    if (rc == 0)
        rc = dup_string_array(json_object_get(pol, "mx-host"), &p->mx_host, &p->nmx_host);
    if (rc < 0) {
        seterr(err, errlen, "policies[%zu]: policy-string / mx-host must be string arrays", idx);
        return rc;
    }
    json_t *sum = json_object_get(pj, "summary");
    p->successful = count_field(sum, "total-successful-session-count");
    p->failed = count_field(sum, "total-failure-session-count");
    json_t *fd = json_object_get(pj, "failure-details");
    size_t nf = json_is_array(fd) ? json_array_size(fd) : 0;
    if (nf && !(p->failures = calloc(nf, sizeof(*p->failures))))
        return -ENOMEM;
    for (size_t k = 0; k < nf; k++) {
        json_t *f = json_array_get(fd, k);
        struct tlsrpt_failure *o = &p->failures[k];
        p->nfailures = k + 1;
        if (!json_is_object(f) || !json_is_string(json_object_get(f, "result-type"))) {
            seterr(err, errlen, "policies[%zu].failure-details[%zu]: no result-type", idx, k);
            return -EINVAL;
        }
        o->result_type = dup_field(f, "result-type");
        o->sending_mta_ip = dup_field(f, "sending-mta-ip");
        o->receiving_mx_hostname = dup_field(f, "receiving-mx-hostname");
        o->receiving_ip = dup_field(f, "receiving-ip");
        o->failure_reason_code = dup_field(f, "failure-reason-code");
        o->failed_sessions = count_field(f, "failed-session-count");
        if (!o->result_type)
            return -ENOMEM;
    }
    return 0;
}

int tlsrpt_report_parse(const char *json, size_t len, struct tlsrpt_report *out, char *err,
                        size_t errlen)
{
    memset(out, 0, sizeof(*out));
    json_error_t jerr;
    json_t *doc = json ? json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!doc) {
        seterr(err, errlen, "not JSON: %s", json ? jerr.text : "no input");
        return -EINVAL;
    }
    int rc = -EINVAL;
    json_t *range = json_object_get(doc, "date-range");
    json_t *pols = json_object_get(doc, "policies");
    if (!json_is_object(doc)) {
        seterr(err, errlen, "a report is a JSON object");
        goto out;
    }
    if (!json_is_string(json_object_get(doc, "report-id"))) {
        seterr(err, errlen, "no report-id");
        goto out;
    }
    if (!json_is_string(json_object_get(range, "start-datetime")) ||
        !json_is_string(json_object_get(range, "end-datetime"))) {
        seterr(err, errlen, "no date-range with start-datetime and end-datetime");
        goto out;
    }
    if (!json_is_array(pols)) {
        seterr(err, errlen, "no policies array");
        goto out;
    }
    out->report_id = dup_field(doc, "report-id");
    out->organization = dup_field(doc, "organization-name");
    out->contact = dup_field(doc, "contact-info");
    out->start = dup_field(range, "start-datetime");
    out->end = dup_field(range, "end-datetime");
    if (!out->report_id || !out->start || !out->end) {
        rc = -ENOMEM;
        goto out;
    }
    size_t np = json_array_size(pols);
    if (np && !(out->policies = calloc(np, sizeof(*out->policies)))) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < np; i++) {
        out->npolicies = i + 1;
        if ((rc = parse_policy_result(json_array_get(pols, i), &out->policies[i], i, err, errlen)) <
            0)
            goto out;
    }
    rc = 0;
out:
    json_decref(doc);
    if (rc < 0)
        tlsrpt_report_clear(out);
    return rc;
}

/* ---- Report email ---------------------------------------------------------------------- */

/* End of the header block: offset of the body, or len when there is none. */
static size_t header_end(const char *msg, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (msg[i] != '\n')
            continue;
        if (i + 1 < len && msg[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && msg[i + 1] == '\r' && msg[i + 2] == '\n')
            return i + 3;
    }
    return len;
}

/* The unfolded, trimmed value of the first field `name` in a header block;
 * malloc'd, NULL when absent. */
static char *header_get(const char *h, size_t len, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < len;) {
        const char *eol = memchr(h + i, '\n', len - i);
        size_t line_end = eol ? (size_t)(eol - h) : len;
        if (line_end - i > nl && strncasecmp(h + i, name, nl) == 0 && h[i + nl] == ':') {
            /* field: this line and every continuation line */
            size_t a = i + nl + 1, b = line_end;
            while (b < len && b + 1 < len && is_wsp(h[b + 1])) {
                const char *e2 = memchr(h + b + 1, '\n', len - b - 1);
                b = e2 ? (size_t)(e2 - h) : len;
            }
            char *v = malloc(b - a + 1);
            if (!v)
                return NULL;
            size_t o = 0;
            for (size_t k = a; k < b; k++)
                if (h[k] != '\r' && h[k] != '\n')
                    v[o++] = h[k];
            while (o && is_wsp(v[o - 1]))
                o--;
            v[o] = '\0';
            size_t s = 0;
            while (is_wsp(v[s]))
                s++;
            memmove(v, v + s, o - s + 1);
            return v;
        }
        i = line_end + 1;
    }
    return NULL;
}

/* A parameter of a structured field value (RFC 2045 5.1), quoted or not;
 * malloc'd, NULL when absent. */
static char *param_get(const char *value, const char *name)
{
    size_t nl = strlen(name);
    const char *p = strchr(value, ';');
    while (p) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == '=') {
            const char *v = p + nl + 1, *e;
            if (*v == '"') {
                e = strchr(++v, '"');
                if (!e)
                    return NULL;
            } else {
                e = v + strcspn(v, "; \t");
            }
            return strndup(v, (size_t)(e - v));
        }
        p = strchr(p, ';');
    }
    return NULL;
}

static bool media_type_is(const char *value, const char *type)
{
    size_t n = strcspn(value, "; \t");
    return n == strlen(type) && strncasecmp(value, type, n) == 0;
}

void tlsrpt_email_clear(struct tlsrpt_email *e)
{
    if (!e)
        return;
    free(e->report_domain);
    free(e->report_submitter);
    free(e->filename);
    free(e->payload);
    memset(e, 0, sizeof(*e));
}

/* Decodes one part (headers h..hlen, body b..blen) into out when it is the report. */
static int take_report_part(const char *part, size_t plen, struct tlsrpt_email *out, bool *taken)
{
    size_t he = header_end(part, plen);
    char *ct = header_get(part, he, "Content-Type");
    *taken = false;
    if (!ct)
        return 0;
    bool gz = media_type_is(ct, "application/tlsrpt+gzip");
    bool js =
        media_type_is(ct, "application/tlsrpt+json") || media_type_is(ct, "application/tlsrpt");
    free(ct);
    if (!gz && !js)
        return 0;
    char *cte = header_get(part, he, "Content-Transfer-Encoding");
    char *cd = header_get(part, he, "Content-Disposition");
    const char *body = part + he;
    size_t blen = plen - he;
    int rc = 0;
    out->gzip = gz;
    out->filename = cd ? param_get(cd, "filename") : NULL;
    if (!(out->payload = malloc(blen + 1))) {
        rc = -ENOMEM;
    } else if (cte && strcasecmp(cte, "base64") == 0) {
        long n = base64_decode(body, blen, out->payload, 1);
        if (n < 0)
            rc = -EINVAL;
        else
            out->payload_len = (size_t)n;
    } else {
        memcpy(out->payload, body, blen);
        out->payload_len = blen;
    }
    free(cte);
    free(cd);
    *taken = rc == 0;
    return rc;
}

int tlsrpt_email_parse(const char *msg, size_t len, struct tlsrpt_email *out, char *err,
                       size_t errlen)
{
    memset(out, 0, sizeof(*out));
    size_t he = header_end(msg, len);
    char *ct = header_get(msg, he, "Content-Type");
    char *rtype = ct ? param_get(ct, "report-type") : NULL;
    char *boundary = ct ? param_get(ct, "boundary") : NULL;
    int rc = -EINVAL;
    if (!ct || !media_type_is(ct, "multipart/report") || !rtype || strcasecmp(rtype, "tlsrpt")) {
        seterr(err, errlen, "not multipart/report; report-type=tlsrpt");
        goto out;
    }
    if (!boundary || !*boundary) {
        seterr(err, errlen, "multipart without a boundary");
        goto out;
    }
    out->report_domain = header_get(msg, he, "TLS-Report-Domain");
    out->report_submitter = header_get(msg, he, "TLS-Report-Submitter");
    if (!out->report_domain || !out->report_submitter) {
        seterr(err, errlen, "no TLS-Report-Domain or TLS-Report-Submitter field");
        goto out;
    }
    /* walk the parts: each starts after a line "--boundary" */
    size_t bl = strlen(boundary), pos = he, part_start = 0;
    bool in_part = false, taken = false;
    while (pos < len && !taken) {
        const char *eol = memchr(msg + pos, '\n', len - pos);
        size_t line_end = eol ? (size_t)(eol - msg) : len;
        size_t next = eol ? line_end + 1 : len;
        bool delim = line_end - pos >= bl + 2 && msg[pos] == '-' && msg[pos + 1] == '-' &&
                     memcmp(msg + pos + 2, boundary, bl) == 0;
        if (delim || next >= len) {
            if (in_part) {
                size_t end = delim ? pos : len;
                /* the CRLF before the delimiter belongs to it (RFC 2046 5.1.1) */
                if (delim && end > part_start && msg[end - 1] == '\n')
                    end--;
                if (delim && end > part_start && msg[end - 1] == '\r')
                    end--;
                if ((rc = take_report_part(msg + part_start, end - part_start, out, &taken)) < 0) {
                    seterr(err, errlen, "report part is not valid base64");
                    goto out;
                }
            }
            bool closing = delim && line_end - pos >= bl + 4 && msg[pos + bl + 2] == '-' &&
                           msg[pos + bl + 3] == '-';
            if (closing)
                break;
            in_part = delim;
            part_start = next;
        }
        pos = next;
    }
    if (!taken) {
        seterr(err, errlen, "no application/tlsrpt+gzip or application/tlsrpt+json part");
        rc = -EINVAL;
        goto out;
    }
    rc = 0;
out:
    free(ct);
    free(rtype);
    free(boundary);
    if (rc < 0)
        tlsrpt_email_clear(out);
    return rc;
}

uint32_t tlsrpt_crc32(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

int tlsrpt_gzip_trailer(const unsigned char *data, size_t len, uint32_t *crc32, uint32_t *isize)
{
    /* RFC 1952 2.3: ID1 ID2 CM (8 = deflate) */
    if (!data || len < GZIP_MIN_MEMBER || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8)
        return -EINVAL;
    const unsigned char *t = data + len - 8;
    *crc32 = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    *isize = (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
    return 0;
}
