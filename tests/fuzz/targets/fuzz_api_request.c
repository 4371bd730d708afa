/* libFuzzer target for the API's request parsers (httpd/api_request.c): any
 * bytes as a native, SendGrid or Postmark message, a batch, the raw JSON
 * form and a raw query string. No crash or leak; an accepted message has a
 * sender, at least one recipient, a body, and no control octet in any
 * value that goes into a header; a refusal names a 4xx status. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httpd/api_request.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static void clean(const char *s)
{
    if (!s)
        return;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        CHECK(*p >= 0x20 || *p == '\t');
}

static void check_message(const struct api_message *m)
{
    CHECK(m->from.email && *m->from.email);
    CHECK(m->n_to + m->n_cc + m->n_bcc > 0 && m->n_to + m->n_cc + m->n_bcc <= API_MAX_RECIPIENTS);
    CHECK(m->text || m->html);
    clean(m->from.name);
    clean(m->subject);
    for (size_t i = 0; i < m->n_to; i++) {
        CHECK(strchr(m->to[i].email, '@'));
        clean(m->to[i].name);
    }
    for (size_t i = 0; i < m->n_headers; i++) {
        clean(m->headers[i].name);
        clean(m->headers[i].value);
        CHECK(!strchr(m->headers[i].name, ':'));
    }
    for (size_t i = 0; i < m->n_att; i++) {
        CHECK(m->att[i].filename && *m->att[i].filename);
        clean(m->att[i].content_id);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct api_req_error e;
    for (int shape = API_SHAPE_NATIVE; shape <= API_SHAPE_POSTMARK; shape++) {
        struct api_message m;
        memset(&e, 0, sizeof e);
        if (api_message_parse(body, size, (enum api_shape)shape, &m, &e) == 0) {
            check_message(&m);
            api_message_clear(&m);
        } else {
            CHECK(e.status >= 400 && e.status < 600 && e.code);
        }
    }
    json_t *batch = api_batch_parse(body, size, &e);
    if (batch) {
        CHECK(json_array_size(batch) >= 1 && json_array_size(batch) <= API_BATCH_MAX);
        for (size_t i = 0; i < json_array_size(batch); i++) {
            struct api_message m;
            if (api_message_from_json(json_array_get(batch, i), API_SHAPE_NATIVE, &m, &e) == 0) {
                check_message(&m);
                api_message_clear(&m);
            }
        }
        json_decref(batch);
    }
    struct api_raw r;
    if (api_raw_from_json(body, size, &r, &e) == 0) {
        CHECK(r.n_to > 0 && r.raw);
        api_raw_clear(&r);
    }
    char *q = malloc(size + 1);
    if (q) {
        memcpy(q, data, size);
        q[size] = '\0';
        if (api_raw_from_query(q, &r, &e) == 0) {
            CHECK(r.n_to > 0);
            for (size_t i = 0; i < r.n_to; i++)
                clean(r.to[i]);
            api_raw_clear(&r);
        }
        free(q);
    }
    return 0;
}
