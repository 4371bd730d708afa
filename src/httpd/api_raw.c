/* Raw submissions (POST /v1/messages/raw): the envelope from the query
 * string or from the JSON form. Pure. */
#include "httpd/api_request.h"
#include "httpd/api_request_int.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_raw_clear(struct api_raw *r)
{
    api_addr_clear(&r->from);
    for (size_t i = 0; i < r->n_to; i++)
        free(r->to[i]);
    free(r->to);
    free(r->raw);
    memset(r, 0, sizeof *r);
}

static int raw_add_to(struct api_raw *r, const char *s, size_t n, struct api_req_error *e)
{
    char *a = api_trim_dup(s, n);
    struct api_addr x;
    if (!a)
        return api_req_fail(e, 500, "internal", "to", "out of memory");
    if (!*a) {
        free(a);
        return 0;
    }
    int rc = api_addr_parse(a, &x, &r->smtputf8);
    free(a);
    if (rc < 0 || x.name) {
        api_addr_clear(&x);
        return api_req_fail(e, 422, "invalid_address", "to", "to: not a valid address");
    }
    if (r->n_to >= API_MAX_RECIPIENTS) {
        api_addr_clear(&x);
        return api_req_fail(e, 422, "too_many_recipients", "to", "at most %d recipients",
                            API_MAX_RECIPIENTS);
    }
    char **g = realloc(r->to, (r->n_to + 1) * sizeof *g);
    if (!g) {
        api_addr_clear(&x);
        return api_req_fail(e, 500, "internal", "to", "out of memory");
    }
    r->to = g;
    g[r->n_to++] = x.email;
    return 0;
}

static int raw_add_list(struct api_raw *r, const char *s, struct api_req_error *e)
{
    for (const char *p = s;;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (raw_add_to(r, p, n, e) < 0)
            return -1;
        if (!c)
            return 0;
        p = c + 1;
    }
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes n octets of s ('+' is a space); NULL on a bad escape or
 * a decoded control octet. */
static char *unescape(const char *s, size_t n)
{
    char *o = malloc(n + 1), *w = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '+')
            c = ' ';
        else if (c == '%') {
            int a = i + 1 < n ? hexval(s[i + 1]) : -1, b = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (a < 0 || b < 0) {
                free(o);
                return NULL;
            }
            c = a * 16 + b;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f) {
            free(o);
            return NULL;
        }
        *w++ = (char)c;
    }
    *w = '\0';
    return o;
}

int api_raw_from_query(const char *query, struct api_raw *r, struct api_req_error *e)
{
    memset(r, 0, sizeof *r);
    bool have_from = false;
    for (const char *p = query ? query : ""; *p;) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (eq) {
            size_t kl = (size_t)(eq - p);
            char *v = unescape(eq + 1, n - kl - 1);
            if (!v) {
                api_raw_clear(r);
                return api_req_fail(e, 400, "invalid_query", "", "bad escape in the query string");
            }
            int rc = 0;
            if (kl == 4 && memcmp(p, "from", 4) == 0) {
                api_addr_clear(&r->from);
                have_from = true;
                rc = *v && (api_addr_parse(v, &r->from, &r->smtputf8) < 0 || r->from.name)
                         ? api_req_fail(e, 422, "invalid_address", "from",
                                        "from: not a valid address")
                         : 0;
            } else if (kl == 2 && memcmp(p, "to", 2) == 0) {
                rc = raw_add_list(r, v, e);
            }
            free(v);
            if (rc < 0) {
                api_raw_clear(r);
                return -1;
            }
        }
        p += n + (amp ? 1 : 0);
    }
    if (!have_from) {
        api_raw_clear(r);
        return api_req_fail(e, 422, "missing_field", "from",
                            "from is required (\"\" for a bounce)");
    }
    if (!r->n_to) {
        api_raw_clear(r);
        return api_req_fail(e, 422, "missing_field", "to", "at least one to is required");
    }
    return 0;
}

int api_raw_from_json(const char *body, size_t len, struct api_raw *r, struct api_req_error *e)
{
    memset(r, 0, sizeof *r);
    json_t *o = api_json_load(body, len, e);
    if (!o)
        return -1;
    int rc = 0;
    const json_t *from = json_object_get(o, "from"), *to = json_object_get(o, "to"),
                 *raw = json_object_get(o, "raw");
    if (!json_is_object(o))
        rc = api_req_fail(e, 400, "invalid_json", "", "the body must be a JSON object");
    else if (!json_is_string(from))
        rc = api_req_fail(e, 422, "missing_field", "from", "from is required (\"\" for a bounce)");
    else if (*json_string_value(from) &&
             (api_addr_parse(json_string_value(from), &r->from, &r->smtputf8) < 0 || r->from.name))
        rc = api_req_fail(e, 422, "invalid_address", "from", "from: not a valid address");
    else if (!json_is_string(raw) || json_string_length(raw) == 0)
        rc = api_req_fail(e, 422, "missing_field", "raw", "raw (the message text) is required");
    if (rc == 0) {
        size_t n = json_is_array(to) ? json_array_size(to) : 1;
        for (size_t i = 0; i < n && rc == 0; i++) {
            const json_t *x = json_is_array(to) ? json_array_get(to, i) : to;
            rc = json_is_string(x)
                     ? raw_add_list(r, json_string_value(x), e)
                     : api_req_fail(e, 422, "invalid_field", "to", "to: strings expected");
        }
        if (rc == 0 && !r->n_to)
            rc = api_req_fail(e, 422, "missing_field", "to", "at least one to is required");
    }
    if (rc == 0) {
        r->raw_len = json_string_length(raw);
        r->raw = malloc(r->raw_len + 1);
        if (!r->raw)
            rc = api_req_fail(e, 500, "internal", "raw", "out of memory");
        else
            memcpy(r->raw, json_string_value(raw), r->raw_len + 1);
    }
    json_decref(o);
    if (rc < 0)
        api_raw_clear(r);
    return rc;
}
