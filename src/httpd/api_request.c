/* Request bodies of the submission API: JSON in, a checked struct
 * api_message out. The native, SendGrid and Postmark shapes differ only in
 * field names and nesting; after this file the door sees one message. */
#include "httpd/api_request.h"
#include "httpd/api_request_int.h"

#include "core/base64.h"
#include "mail/address.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 5322 2.1.1: a header line may not pass 998 octets; a field the API
 * takes from the client stays well inside so folding always works. */
#define API_HEADER_VALUE_MAX 900
#define API_NAME_MAX 256

int api_req_fail(struct api_req_error *e, int status, const char *code, const char *field,
                 const char *fmt, ...)
{
    e->status = status;
    e->code = code;
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static bool has_ctl(const char *s, bool allow_lines)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t' && !(allow_lines && (*p == '\r' || *p == '\n'))) || *p == 0x7f)
            return true;
    return false;
}

char *api_trim_dup(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return strndup(s, n);
}

int api_addr_parse(const char *s, struct api_addr *out, bool *utf8)
{
    memset(out, 0, sizeof *out);
    if (!s || has_ctl(s, false))
        return -1;
    const char *lt = strrchr(s, '<');
    char *email = NULL, *name = NULL;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (lt) {
        if (n == 0 || s[n - 1] != '>')
            return -1;
        email = api_trim_dup(lt + 1, (size_t)(s + n - 1 - (lt + 1)));
        name = api_trim_dup(s, (size_t)(lt - s));
        size_t nl = name ? strlen(name) : 0;
        if (nl >= 2 && name[0] == '"' && name[nl - 1] == '"') {
            memmove(name, name + 1, nl - 2);
            name[nl - 2] = '\0';
        }
    } else {
        email = api_trim_dup(s, n);
    }
    struct smtp_path p;
    if (!email || !*email || strlen(email) > SMTP_PATH_MAX ||
        smtp_parse_mailbox(email, strlen(email), true, &p) != SMTP_ADDR_OK ||
        (name && strlen(name) > API_NAME_MAX)) {
        free(email);
        free(name);
        return -1;
    }
    if (name && !*name) {
        free(name);
        name = NULL;
    }
    if (p.is_utf8 && utf8)
        *utf8 = true;
    out->email = email;
    out->name = name;
    return 0;
}

void api_addr_clear(struct api_addr *a)
{
    free(a->email);
    free(a->name);
    a->email = a->name = NULL;
}

/* {"email": ..., "name": ...} or a string. */
static int addr_from_json(const json_t *v, const char *field, struct api_addr *out, bool *utf8,
                          struct api_req_error *e)
{
    memset(out, 0, sizeof *out);
    if (json_is_string(v)) {
        if (api_addr_parse(json_string_value(v), out, utf8) < 0)
            return api_req_fail(e, 422, "invalid_address", field, "%s: not a valid mailbox", field);
        return 0;
    }
    if (!json_is_object(v))
        return api_req_fail(e, 422, "invalid_field", field,
                            "%s: expected an address string or object", field);
    const json_t *em = json_object_get(v, "email");
    if (!em)
        em = json_object_get(v, "Email");
    const json_t *nm = json_object_get(v, "name");
    if (!nm)
        nm = json_object_get(v, "Name");
    if (!json_is_string(em) || api_addr_parse(json_string_value(em), out, utf8) < 0 || out->name)
        return api_addr_clear(out), api_req_fail(e, 422, "invalid_address", field,
                                                 "%s: email is not a valid mailbox", field);
    if (nm && !json_is_null(nm)) {
        if (!json_is_string(nm) || has_ctl(json_string_value(nm), false) ||
            strlen(json_string_value(nm)) > API_NAME_MAX)
            return api_addr_clear(out), api_req_fail(e, 422, "invalid_field", field,
                                                     "%s: name must be a short string", field);
        if (*json_string_value(nm))
            out->name = strdup(json_string_value(nm));
    }
    return 0;
}

/* Appends addresses from a string (Postmark: a comma list), an object or
 * an array of either. */
static int addr_list(const json_t *v, const char *field, struct api_addr **list, size_t *n,
                     bool *utf8, struct api_req_error *e)
{
    if (!v || json_is_null(v))
        return 0;
    const json_t *one[1] = {v};
    size_t count = 1;
    if (json_is_array(v))
        count = json_array_size(v);
    for (size_t i = 0; i < count; i++) {
        const json_t *x = json_is_array(v) ? json_array_get(v, i) : one[0];
        if (json_is_string(x) && strchr(json_string_value(x), ',')) {
            /* a comma list; a comma inside a quoted display name does not split */
            const char *s = json_string_value(x);
            bool q = false;
            const char *start = s;
            for (const char *p = s;; p++) {
                if (*p == '"')
                    q = !q;
                if (*p && (*p != ',' || q))
                    continue;
                char *part = api_trim_dup(start, (size_t)(p - start));
                if (!part)
                    return api_req_fail(e, 500, "internal", field, "out of memory");
                if (*part) {
                    if (*n >= API_MAX_RECIPIENTS) {
                        free(part);
                        return api_req_fail(e, 422, "too_many_recipients", field,
                                            "at most %d recipients per message",
                                            API_MAX_RECIPIENTS);
                    }
                    struct api_addr *g = realloc(*list, (*n + 1) * sizeof **list);
                    if (!g) {
                        free(part);
                        return api_req_fail(e, 500, "internal", field, "out of memory");
                    }
                    *list = g;
                    int rc = api_addr_parse(part, &(*list)[*n], utf8);
                    free(part);
                    if (rc < 0)
                        return api_req_fail(e, 422, "invalid_address", field,
                                            "%s: not a valid mailbox", field);
                    (*n)++;
                } else {
                    free(part);
                }
                if (!*p)
                    break;
                start = p + 1;
            }
            continue;
        }
        if (*n >= API_MAX_RECIPIENTS)
            return api_req_fail(e, 422, "too_many_recipients", field,
                                "at most %d recipients per message", API_MAX_RECIPIENTS);
        struct api_addr *g = realloc(*list, (*n + 1) * sizeof **list);
        if (!g)
            return api_req_fail(e, 500, "internal", field, "out of memory");
        *list = g;
        if (addr_from_json(x, field, &(*list)[*n], utf8, e) < 0)
            return -1;
        (*n)++;
    }
    return 0;
}

static int opt_string(const json_t *o, const char *key, const char *field, char **out, bool lines,
                      struct api_req_error *e)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return api_req_fail(e, 422, "invalid_field", field, "%s: expected a string", field);
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v))
        return api_req_fail(e, 422, "invalid_field", field, "%s: NUL character", field);
    if (has_ctl(s, lines))
        return api_req_fail(e, 422, "invalid_field", field, "%s: control characters", field);
    if (!lines && strlen(s) > API_HEADER_VALUE_MAX)
        return api_req_fail(e, 422, "invalid_field", field, "%s: longer than %d octets", field,
                            API_HEADER_VALUE_MAX);
    *out = strdup(s);
    return *out ? 0 : api_req_fail(e, 500, "internal", field, "out of memory");
}

/* Header fields the message builder writes itself. */
static bool reserved_header(const char *name)
{
    static const char *const r[] = {"from",         "to",           "cc",
                                    "bcc",          "subject",      "reply-to",
                                    "mime-version", "content-type", "content-transfer-encoding",
                                    "sender",       "received",     NULL};
    for (size_t i = 0; r[i]; i++)
        if (strcasecmp(name, r[i]) == 0)
            return true;
    return false;
}

static bool header_name_ok(const char *s)
{
    if (!*s || strlen(s) > 76)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || *p == ':')
            return false; /* RFC 5322 2.2: ftext */
    return true;
}

static int add_pair(struct api_pair **v, size_t *n, size_t max, const char *name, const char *value,
                    const char *field, struct api_req_error *e)
{
    if (*n >= max)
        return api_req_fail(e, 422, "invalid_field", field, "%s: at most %zu entries", field, max);
    struct api_pair *g = realloc(*v, (*n + 1) * sizeof **v);
    if (!g)
        return api_req_fail(e, 500, "internal", field, "out of memory");
    *v = g;
    g[*n].name = strdup(name);
    g[*n].value = strdup(value);
    (*n)++;
    if (!g[*n - 1].name || !g[*n - 1].value)
        return api_req_fail(e, 500, "internal", field, "out of memory");
    return 0;
}

static int header_pair(struct api_message *m, const char *name, const json_t *val,
                       struct api_req_error *e)
{
    if (!json_is_string(val))
        return api_req_fail(e, 422, "invalid_header", "headers",
                            "header %.60s: value must be a string", name);
    const char *v = json_string_value(val);
    if (!header_name_ok(name))
        return api_req_fail(e, 422, "invalid_header", "headers", "header name %.60s is not allowed",
                            name);
    if (reserved_header(name))
        return api_req_fail(e, 422, "invalid_header", "headers",
                            "header %.60s is set from its own field, not in headers", name);
    if (has_ctl(v, false) || strlen(v) != json_string_length(val) ||
        strlen(v) > API_HEADER_VALUE_MAX)
        return api_req_fail(e, 422, "invalid_header", "headers",
                            "header %.60s: value has control characters or is too long", name);
    return add_pair(&m->headers, &m->n_headers, API_MAX_HEADERS, name, v, "headers", e);
}

/* {"Name": "value"} (native, SendGrid) or [{"Name": ..., "Value": ...}] (Postmark). */
static int headers_from_json(struct api_message *m, const json_t *h, struct api_req_error *e)
{
    if (!h || json_is_null(h))
        return 0;
    if (json_is_object(h)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)h, k, v)
        {
            if (header_pair(m, k, v, e) < 0)
                return -1;
        }
        return 0;
    }
    if (!json_is_array(h))
        return api_req_fail(e, 422, "invalid_field", "headers", "headers: expected an object");
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)h, i, x)
    {
        const json_t *n = json_object_get(x, "Name"), *v = json_object_get(x, "Value");
        if (!json_is_string(n))
            return api_req_fail(e, 422, "invalid_header", "headers", "headers[%zu]: Name missing",
                                i);
        if (header_pair(m, json_string_value(n), v, e) < 0)
            return -1;
    }
    return 0;
}

static int metadata_from_json(struct api_message *m, const json_t *o, const char *field,
                              struct api_req_error *e)
{
    if (!o || json_is_null(o))
        return 0;
    if (!json_is_object(o))
        return api_req_fail(e, 422, "invalid_field", field, "%s: expected an object", field);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        char num[32];
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
            s = num;
        }
        if (!s || has_ctl(k, false) || has_ctl(s, false) || strlen(k) > 128 || strlen(s) > 1024)
            return api_req_fail(e, 422, "invalid_field", field,
                                "%s: values must be short strings or integers", field);
        if (add_pair(&m->metadata, &m->n_metadata, 50, k, s, field, e) < 0)
            return -1;
    }
    return 0;
}

static int tags_from_json(struct api_message *m, const json_t *v, const char *field,
                          struct api_req_error *e)
{
    if (!v || json_is_null(v))
        return 0;
    const json_t *one = v;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_array(v) && !json_is_string(v))
        return api_req_fail(e, 422, "invalid_field", field, "%s: expected strings", field);
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_is_array(v) ? json_array_get(v, i) : one;
        if (!json_is_string(x) || has_ctl(json_string_value(x), false) ||
            strlen(json_string_value(x)) > 128 || !*json_string_value(x))
            return api_req_fail(e, 422, "invalid_field", field,
                                "%s: tags are short non-empty strings", field);
        if (m->n_tags >= API_MAX_TAGS)
            return api_req_fail(e, 422, "invalid_field", field, "%s: at most %d tags", field,
                                API_MAX_TAGS);
        char **g = realloc(m->tags, (m->n_tags + 1) * sizeof *g);
        if (!g)
            return api_req_fail(e, 500, "internal", field, "out of memory");
        m->tags = g;
        if (!(g[m->n_tags++] = strdup(json_string_value(x))))
            return api_req_fail(e, 500, "internal", field, "out of memory");
    }
    return 0;
}

/* Field names of one attachment object in each shape. */
struct att_names {
    const char *filename, *type, *content, *cid;
};

static int attachments_from_json(struct api_message *m, const json_t *v, const char *field,
                                 const struct att_names *nm, struct api_req_error *e)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return api_req_fail(e, 422, "invalid_field", field, "%s: expected an array", field);
    if (json_array_size(v) > API_MAX_ATTACHMENTS)
        return api_req_fail(e, 422, "invalid_field", field, "%s: at most %d attachments", field,
                            API_MAX_ATTACHMENTS);
    m->att = calloc(json_array_size(v) + 1, sizeof *m->att);
    if (!m->att)
        return api_req_fail(e, 500, "internal", field, "out of memory");
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)v, i, x)
    {
        char f[64];
        snprintf(f, sizeof f, "%s[%zu]", field, i);
        struct api_attachment *a = &m->att[m->n_att++];
        if (!json_is_object(x))
            return api_req_fail(e, 422, "invalid_field", f, "%s: expected an object", f);
        if (opt_string(x, nm->filename, f, &a->filename, false, e) < 0 ||
            opt_string(x, nm->type, f, &a->content_type, false, e) < 0 ||
            opt_string(x, nm->cid, f, &a->content_id, false, e) < 0)
            return -1;
        if (!a->filename || !*a->filename || strchr(a->filename, '"') || strchr(a->filename, '\\'))
            return api_req_fail(e, 422, "invalid_field", f,
                                "%s: %s is required and may not hold quotes or backslashes", f,
                                nm->filename);
        if (a->content_type && (!strchr(a->content_type, '/') || strchr(a->content_type, ';') ||
                                strchr(a->content_type, ' ')))
            return api_req_fail(e, 422, "invalid_field", f, "%s: %s must be type/subtype", f,
                                nm->type);
        if (a->content_id && (strpbrk(a->content_id, "<> \"") || !*a->content_id))
            return api_req_fail(e, 422, "invalid_field", f, "%s: %s must be a bare id", f, nm->cid);
        const json_t *c = json_object_get(x, nm->content);
        if (!json_is_string(c))
            return api_req_fail(e, 422, "missing_field", f, "%s: %s (base64) is required", f,
                                nm->content);
        size_t cl = json_string_length(c);
        a->data = malloc(cl / 4 * 3 + 3);
        if (!a->data)
            return api_req_fail(e, 500, "internal", f, "out of memory");
        long dl = base64_decode(json_string_value(c), cl, a->data, 1);
        if (dl < 0)
            return api_req_fail(e, 422, "invalid_base64", f, "%s: %s is not valid base64", f,
                                nm->content);
        a->len = (size_t)dl;
    }
    return 0;
}

static int send_at_from_json(struct api_message *m, const json_t *v, struct api_req_error *e)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 253402300799LL)
        return api_req_fail(e, 422, "invalid_field", "send_at", "send_at: unix seconds expected");
    m->send_at = json_integer_value(v);
    return 0;
}

static int native(const json_t *o, struct api_message *m, struct api_req_error *e)
{
    static const struct att_names nm = {"filename", "content_type", "content", "content_id"};
    const json_t *from = json_object_get(o, "from");
    if (!from)
        return api_req_fail(e, 422, "missing_field", "from", "from is required");
    if (addr_from_json(from, "from", &m->from, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "to"), "to", &m->to, &m->n_to, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "cc"), "cc", &m->cc, &m->n_cc, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "bcc"), "bcc", &m->bcc, &m->n_bcc, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "reply_to"), "reply_to", &m->reply_to, &m->n_reply_to,
                  &m->smtputf8, e) < 0 ||
        opt_string(o, "subject", "subject", &m->subject, false, e) < 0 ||
        opt_string(o, "text", "text", &m->text, true, e) < 0 ||
        opt_string(o, "html", "html", &m->html, true, e) < 0 ||
        attachments_from_json(m, json_object_get(o, "attachments"), "attachments", &nm, e) < 0 ||
        headers_from_json(m, json_object_get(o, "headers"), e) < 0 ||
        tags_from_json(m, json_object_get(o, "tags"), "tags", e) < 0 ||
        metadata_from_json(m, json_object_get(o, "metadata"), "metadata", e) < 0 ||
        send_at_from_json(m, json_object_get(o, "send_at"), e) < 0)
        return -1;
    return 0;
}

/* SendGrid v3 mail/send: one personalization (to/cc/bcc, its own subject,
 * headers and custom_args), content [{type, value}], attachments with
 * type/disposition/content_id, categories as tags. */
static int sendgrid(const json_t *o, struct api_message *m, struct api_req_error *e)
{
    static const struct att_names nm = {"filename", "type", "content", "content_id"};
    const json_t *ps = json_object_get(o, "personalizations");
    if (!json_is_array(ps) || json_array_size(ps) == 0)
        return api_req_fail(e, 422, "missing_field", "personalizations",
                            "personalizations: an array with one entry is required");
    if (json_array_size(ps) > 1)
        return api_req_fail(e, 422, "unsupported", "personalizations",
                            "personalizations: only one entry is supported; send one request per "
                            "personalization or use /v1/messages/batch");
    const json_t *p = json_array_get(ps, 0);
    if (!json_is_object(p))
        return api_req_fail(e, 422, "invalid_field", "personalizations[0]", "expected an object");
    const json_t *from = json_object_get(o, "from");
    if (!from)
        return api_req_fail(e, 422, "missing_field", "from", "from is required");
    if (addr_from_json(from, "from", &m->from, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(p, "to"), "personalizations[0].to", &m->to, &m->n_to,
                  &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(p, "cc"), "personalizations[0].cc", &m->cc, &m->n_cc,
                  &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(p, "bcc"), "personalizations[0].bcc", &m->bcc, &m->n_bcc,
                  &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "reply_to"), "reply_to", &m->reply_to, &m->n_reply_to,
                  &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "reply_to_list"), "reply_to_list", &m->reply_to,
                  &m->n_reply_to, &m->smtputf8, e) < 0)
        return -1;
    if (opt_string(p, "subject", "personalizations[0].subject", &m->subject, false, e) < 0 ||
        (!m->subject && opt_string(o, "subject", "subject", &m->subject, false, e) < 0))
        return -1;
    const json_t *content = json_object_get(o, "content");
    if (content && !json_is_array(content))
        return api_req_fail(e, 422, "invalid_field", "content", "content: expected an array");
    size_t i;
    json_t *c;
    json_array_foreach((json_t *)content, i, c)
    {
        const json_t *t = json_object_get(c, "type");
        char **dst = NULL;
        if (json_is_string(t) && strcasecmp(json_string_value(t), "text/plain") == 0)
            dst = &m->text;
        else if (json_is_string(t) && strcasecmp(json_string_value(t), "text/html") == 0)
            dst = &m->html;
        else
            return api_req_fail(e, 422, "unsupported", "content",
                                "content[%zu]: type must be text/plain or text/html", i);
        if (*dst)
            return api_req_fail(e, 422, "invalid_field", "content",
                                "content[%zu]: type given twice", i);
        if (opt_string(c, "value", "content", dst, true, e) < 0)
            return -1;
    }
    if (attachments_from_json(m, json_object_get(o, "attachments"), "attachments", &nm, e) < 0 ||
        headers_from_json(m, json_object_get(o, "headers"), e) < 0 ||
        headers_from_json(m, json_object_get(p, "headers"), e) < 0 ||
        tags_from_json(m, json_object_get(o, "categories"), "categories", e) < 0 ||
        metadata_from_json(m, json_object_get(o, "custom_args"), "custom_args", e) < 0 ||
        metadata_from_json(m, json_object_get(p, "custom_args"), "personalizations[0].custom_args",
                           e) < 0 ||
        send_at_from_json(m, json_object_get(o, "send_at"), e) < 0)
        return -1;
    return 0;
}

/* Postmark /email: PascalCase fields, comma-list recipients, one Tag. */
static int postmark(const json_t *o, struct api_message *m, struct api_req_error *e)
{
    static const struct att_names nm = {"Name", "ContentType", "Content", "ContentID"};
    const json_t *from = json_object_get(o, "From");
    if (!from)
        return api_req_fail(e, 422, "missing_field", "From", "From is required");
    if (addr_from_json(from, "From", &m->from, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "To"), "To", &m->to, &m->n_to, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "Cc"), "Cc", &m->cc, &m->n_cc, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "Bcc"), "Bcc", &m->bcc, &m->n_bcc, &m->smtputf8, e) < 0 ||
        addr_list(json_object_get(o, "ReplyTo"), "ReplyTo", &m->reply_to, &m->n_reply_to,
                  &m->smtputf8, e) < 0 ||
        opt_string(o, "Subject", "Subject", &m->subject, false, e) < 0 ||
        opt_string(o, "TextBody", "TextBody", &m->text, true, e) < 0 ||
        opt_string(o, "HtmlBody", "HtmlBody", &m->html, true, e) < 0 ||
        attachments_from_json(m, json_object_get(o, "Attachments"), "Attachments", &nm, e) < 0 ||
        headers_from_json(m, json_object_get(o, "Headers"), e) < 0 ||
        tags_from_json(m, json_object_get(o, "Tag"), "Tag", e) < 0 ||
        metadata_from_json(m, json_object_get(o, "Metadata"), "Metadata", e) < 0)
        return -1;
    return 0;
}

int api_message_from_json(const json_t *o, enum api_shape shape, struct api_message *m,
                          struct api_req_error *e)
{
    memset(m, 0, sizeof *m);
    if (!json_is_object(o))
        return api_req_fail(e, 400, "invalid_json", "", "the body must be a JSON object");
    int rc = shape == API_SHAPE_SENDGRID   ? sendgrid(o, m, e)
             : shape == API_SHAPE_POSTMARK ? postmark(o, m, e)
                                           : native(o, m, e);
    if (rc == 0 && m->n_to + m->n_cc + m->n_bcc == 0)
        rc = api_req_fail(e, 422, "missing_field", "to", "at least one recipient (to, cc or bcc)");
    if (rc == 0 && m->n_to + m->n_cc + m->n_bcc > API_MAX_RECIPIENTS)
        rc = api_req_fail(e, 422, "too_many_recipients", "to", "at most %d recipients per message",
                          API_MAX_RECIPIENTS);
    if (rc == 0 && !m->text && !m->html)
        rc = api_req_fail(e, 422, "missing_field", "text", "text or html is required");
    if (rc < 0)
        api_message_clear(m);
    return rc;
}

json_t *api_json_load(const char *body, size_t len, struct api_req_error *e)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        api_req_fail(e, 400, "invalid_json", "", "the body is not valid JSON: %s (at %d:%d)",
                     je.text, je.line, je.column);
    return o;
}

int api_message_parse(const char *body, size_t len, enum api_shape shape, struct api_message *out,
                      struct api_req_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *o = api_json_load(body, len, err);
    if (!o)
        return -1;
    int rc = api_message_from_json(o, shape, out, err);
    json_decref(o);
    return rc;
}

static void addrs_free(struct api_addr *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        api_addr_clear(&v[i]);
    free(v);
}

static void pairs_free(struct api_pair *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
}

void api_message_clear(struct api_message *m)
{
    api_addr_clear(&m->from);
    addrs_free(m->to, m->n_to);
    addrs_free(m->cc, m->n_cc);
    addrs_free(m->bcc, m->n_bcc);
    addrs_free(m->reply_to, m->n_reply_to);
    free(m->subject);
    free(m->text);
    free(m->html);
    for (size_t i = 0; i < m->n_att; i++) {
        free(m->att[i].filename);
        free(m->att[i].content_type);
        free(m->att[i].content_id);
        free(m->att[i].data);
    }
    free(m->att);
    pairs_free(m->headers, m->n_headers);
    for (size_t i = 0; i < m->n_tags; i++)
        free(m->tags[i]);
    free(m->tags);
    pairs_free(m->metadata, m->n_metadata);
    memset(m, 0, sizeof *m);
}

size_t api_message_rcpts(const struct api_message *m, const char **out, size_t cap)
{
    size_t n = 0;
    const struct api_addr *lists[3] = {m->to, m->cc, m->bcc};
    size_t counts[3] = {m->n_to, m->n_cc, m->n_bcc};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l] && n < cap; i++)
            out[n++] = lists[l][i].email;
    return n;
}

json_t *api_batch_parse(const char *body, size_t len, struct api_req_error *e)
{
    json_t *o = api_json_load(body, len, e);
    if (!o)
        return NULL;
    json_t *msgs = json_object_get(o, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        api_req_fail(e, 422, "missing_field", "messages",
                     "messages: a non-empty array is required");
        msgs = NULL;
    } else if (json_array_size(msgs) > API_BATCH_MAX) {
        api_req_fail(e, 422, "too_many_messages", "messages", "at most %d messages per batch",
                     API_BATCH_MAX);
        msgs = NULL;
    }
    json_incref(msgs);
    json_decref(o);
    return msgs;
}
