/* The API's pure parts: request bodies in the three shapes, the raw
 * envelope, SMTP refusal -> HTTP status, and the event ring. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "httpd/api_events.h"
#include "httpd/api_request.h"
#include "httpd/api_status.h"

static int parse(const char *json, enum api_shape shape, struct api_message *m,
                 struct api_req_error *e)
{
    memset(e, 0, sizeof *e);
    return api_message_parse(json, strlen(json), shape, m, e);
}

static void native_message_fields(void **state)
{
    struct api_message m;
    struct api_req_error e;
    assert_int_equal(parse("{\"from\": {\"email\": \"a@shop.test\", \"name\": \"Shop\"},"
                           " \"to\": [\"Bob <b@x.test>\", \"c@x.test\"], \"cc\": \"d@x.test\","
                           " \"bcc\": [{\"email\": \"e@x.test\"}], \"reply_to\": \"r@shop.test\","
                           " \"subject\": \"Hi\", \"text\": \"t\", \"html\": \"<p>h</p>\","
                           " \"attachments\": [{\"filename\": \"a.txt\", \"content\": \"aGk=\","
                           " \"content_id\": \"img1\"}], \"headers\": {\"X-A\": \"1\"},"
                           " \"tags\": [\"t1\"], \"metadata\": {\"k\": \"v\", \"n\": 3}}",
                           API_SHAPE_NATIVE, &m, &e),
                     0);
    assert_string_equal(m.from.email, "a@shop.test");
    assert_string_equal(m.from.name, "Shop");
    assert_int_equal(m.n_to, 2);
    assert_string_equal(m.to[0].name, "Bob");
    assert_string_equal(m.to[0].email, "b@x.test");
    assert_int_equal(m.n_cc, 1);
    assert_int_equal(m.n_bcc, 1);
    assert_int_equal(m.n_att, 1);
    assert_memory_equal(m.att[0].data, "hi", 2);
    assert_int_equal(m.att[0].len, 2);
    assert_string_equal(m.att[0].content_id, "img1");
    assert_string_equal(m.headers[0].name, "X-A");
    assert_int_equal(m.n_metadata, 2);
    assert_string_equal(m.metadata[1].value, "3");
    const char *r[8];
    assert_int_equal(api_message_rcpts(&m, r, 8), 4);
    assert_string_equal(r[3], "e@x.test");
    api_message_clear(&m);
}

static void refusals_name_the_field(void **state)
{
    static const struct {
        const char *json;
        int status;
        const char *code, *field;
    } cases[] = {
        {"{", 400, "invalid_json", ""},
        {"[]", 400, "invalid_json", ""},
        {"{\"from\": \"a@b.test\", \"from\": \"c@d.test\"}", 400, "invalid_json", ""},
        {"{\"to\": \"a@b.test\", \"text\": \"x\"}", 422, "missing_field", "from"},
        {"{\"from\": \"nope\", \"to\": \"a@b.test\", \"text\": \"x\"}", 422, "invalid_address",
         "from"},
        {"{\"from\": \"a@b.test\", \"text\": \"x\"}", 422, "missing_field", "to"},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\"}", 422, "missing_field", "text"},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"x\", \"subject\": "
         "\"a\\r\\nBcc: x@y.test\"}",
         422, "invalid_field", "subject"},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"x\", \"headers\": "
         "{\"X-A\": \"1\\nX-B: 2\"}}",
         422, "invalid_header", "headers"},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"x\", \"headers\": "
         "{\"Content-Type\": \"text/html\"}}",
         422, "invalid_header", "headers"},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"x\", \"headers\": "
         "{\"Bad Name\": \"1\"}}",
         422, "invalid_header", "headers"},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"x\", \"attachments\": "
         "[{\"filename\": \"a\", \"content\": \"@@\"}]}",
         422, "invalid_base64", "attachments[0]"},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"x\", \"attachments\": "
         "[{\"content\": \"aGk=\"}]}",
         422, "invalid_field", "attachments[0]"},
        /* jansson refuses \u0000 unless asked: not JSON the API takes */
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"a\\u0000b\"}", 400,
         "invalid_json", ""},
        {"{\"from\": \"a@b.test\", \"to\": \"c@d.test\", \"text\": \"x\", \"send_at\": \"soon\"}",
         422, "invalid_field", "send_at"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct api_message m;
        struct api_req_error e;
        assert_int_equal(parse(cases[i].json, API_SHAPE_NATIVE, &m, &e), -1);
        assert_int_equal(e.status, cases[i].status);
        assert_string_equal(e.code, cases[i].code);
        assert_string_equal(e.field, cases[i].field);
        assert_true(e.message[0]);
        assert_null(m.from.email); /* cleared */
    }
}

static void sendgrid_and_postmark_shapes(void **state)
{
    struct api_message m;
    struct api_req_error e;
    assert_int_equal(
        parse("{\"personalizations\": [{\"to\": [{\"email\": \"t@x.test\", \"name\": \"T\"}],"
              " \"subject\": \"S\", \"custom_args\": {\"a\": \"1\"}}],"
              " \"from\": {\"email\": \"f@shop.test\"}, \"subject\": \"ignored\","
              " \"content\": [{\"type\": \"text/plain\", \"value\": \"p\"},"
              " {\"type\": \"text/html\", \"value\": \"h\"}], \"categories\": [\"c\"],"
              " \"attachments\": [{\"content\": \"aGk=\", \"filename\": \"f.txt\","
              " \"type\": \"text/plain\"}]}",
              API_SHAPE_SENDGRID, &m, &e),
        0);
    assert_string_equal(m.subject, "S");
    assert_string_equal(m.text, "p");
    assert_string_equal(m.html, "h");
    assert_string_equal(m.tags[0], "c");
    assert_string_equal(m.att[0].content_type, "text/plain");
    assert_string_equal(m.metadata[0].name, "a");
    api_message_clear(&m);
    assert_int_equal(parse("{\"personalizations\": [{\"to\": [{\"email\": \"t@x.test\"}]},"
                           " {\"to\": [{\"email\": \"u@x.test\"}]}],"
                           " \"from\": {\"email\": \"f@shop.test\"},"
                           " \"content\": [{\"type\": \"text/plain\", \"value\": \"p\"}]}",
                           API_SHAPE_SENDGRID, &m, &e),
                     -1);
    assert_string_equal(e.code, "unsupported");

    assert_int_equal(parse("{\"From\": \"Shop <f@shop.test>\","
                           " \"To\": \"a@x.test, \\\"B, C\\\" <b@x.test>\", \"Cc\": \"c@x.test\","
                           " \"Subject\": \"S\", \"TextBody\": \"t\", \"Tag\": \"tag\","
                           " \"Headers\": [{\"Name\": \"X-P\", \"Value\": \"v\"}],"
                           " \"Attachments\": [{\"Name\": \"n.bin\", \"Content\": \"aGk=\","
                           " \"ContentType\": \"application/octet-stream\"}]}",
                           API_SHAPE_POSTMARK, &m, &e),
                     0);
    assert_string_equal(m.from.name, "Shop");
    assert_int_equal(m.n_to, 2);
    assert_string_equal(m.to[1].name, "B, C");
    assert_string_equal(m.to[1].email, "b@x.test");
    assert_string_equal(m.headers[0].value, "v");
    assert_string_equal(m.att[0].filename, "n.bin");
    api_message_clear(&m);
}

static void raw_envelope(void **state)
{
    struct api_raw r;
    struct api_req_error e;
    assert_int_equal(api_raw_from_query("from=a%40b.test&to=c@d.test,e@f.test&to=g@h.test", &r, &e),
                     0);
    assert_string_equal(r.from.email, "a@b.test");
    assert_int_equal(r.n_to, 3);
    assert_string_equal(r.to[2], "g@h.test");
    api_raw_clear(&r);
    assert_int_equal(api_raw_from_query("from=&to=c@d.test", &r, &e), 0);
    assert_null(r.from.email); /* the null sender */
    api_raw_clear(&r);
    assert_int_equal(api_raw_from_query("to=c@d.test", &r, &e), -1);
    assert_string_equal(e.field, "from");
    assert_int_equal(api_raw_from_query("from=a@b.test&to=c%0d%0a@d.test", &r, &e), -1);
    assert_int_equal(api_raw_from_query("from=a@b.test&to=%zz", &r, &e), -1);
    const char *j =
        "{\"from\": \"a@b.test\", \"to\": [\"c@d.test\"], \"raw\": \"X: y\\r\\n\\r\\nb\"}";
    assert_int_equal(api_raw_from_json(j, strlen(j), &r, &e), 0);
    assert_int_equal(r.raw_len, 9);
    api_raw_clear(&r);
    j = "{\"from\": \"a@b.test\", \"to\": [\"c@d.test\"]}";
    assert_int_equal(api_raw_from_json(j, strlen(j), &r, &e), -1);
    assert_string_equal(e.field, "raw");
}

static void batch_limits(void **state)
{
    struct api_req_error e;
    const char *one = "{\"messages\": [{}, {}]}";
    json_t *b = api_batch_parse(one, strlen(one), &e);
    assert_non_null(b);
    assert_int_equal(json_array_size(b), 2);
    json_decref(b);
    assert_null(api_batch_parse("{\"messages\": []}", 16, &e));
    char big[4096 * 2];
    int n = snprintf(big, sizeof big, "{\"messages\": [");
    for (int i = 0; i <= API_BATCH_MAX; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "%s{}", i ? "," : "");
    snprintf(big + n, sizeof big - (size_t)n, "]}");
    assert_null(api_batch_parse(big, strlen(big), &e));
    assert_string_equal(e.code, "too_many_messages");
}

static void status_of_refusals(void **state)
{
    static const struct {
        enum reject_reason why;
        const char *reply;
        int status;
        const char *rule;
        int retry;
    } cases[] = {
        {REJECT_SENDER, "550 5.7.1 Sender not allowed", 403, "allow_from", 0},
        {REJECT_RECIPIENT, "550 5.7.1 Recipient not allowed", 403, "allow_rcpt", 0},
        {REJECT_SIZE, "552 5.3.4 too big", 413, "max_size", 0},
        {REJECT_RATE, "450 4.7.1 Rate limit exceeded; try again in 17 s", 429, "rate", 17},
        {REJECT_QUOTA, "452 4.7.1 daily quota", 429, "quota", 3600},
        {REJECT_CONTENT, "554 5.7.1 Message refused: blocked attachment", 422, "content", 0},
        {REJECT_CONTENT, "550 5.6.0 Missing required header: From", 422, "required_headers", 0},
        {REJECT_STORAGE, "452 4.3.1 Insufficient system storage", 503, "storage", 30},
        {REJECT_SYNTAX, "554 5.6.0 empty", 422, "syntax", 0},
        {REJECT_SMUGGLING, "550 5.5.2 bare LF", 422, "line_endings", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct authz_refusal ref = {.reason = cases[i].why};
        snprintf(ref.reply, sizeof ref.reply, "%s", cases[i].reply);
        struct api_status st;
        api_status_from_refusal(&ref, &st);
        assert_int_equal(st.status, cases[i].status);
        assert_string_equal(st.rule, cases[i].rule);
        assert_int_equal(st.retry_after, cases[i].retry);
    }
    assert_string_equal(api_status_phrase(422), "Unprocessable Content");
}

struct seen {
    char ids[16][17];
    size_t n;
};

static void remember(void *arg, const struct api_event *ev)
{
    struct seen *s = arg;
    memcpy(s->ids[s->n++], ev->id, 17);
}

static void event_ring_pages_and_forgets(void **state)
{
    struct api_events *e = api_events_new(4);
    char id[17];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "%016x", i);
        api_events_add(e, 1000 + i, "delivered", id, "r@x.test", i % 2 ? "odd" : "even", "up",
                       "250 ok");
    }
    struct seen s = {0};
    uint64_t oldest = api_events_oldest(e);
    uint64_t next = api_events_each(e, 0, 100, NULL, NULL, remember, &s);
    assert_int_equal(s.n, 4); /* the first two gave way */
    assert_string_equal(s.ids[0], "0000000000000002");
    assert_int_equal(next, oldest + 3);
    memset(&s, 0, sizeof s);
    next = api_events_each(e, 0, 1, "odd", NULL, remember, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "0000000000000003");
    memset(&s, 0, sizeof s);
    api_events_each(e, next, 100, "odd", NULL, remember, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "0000000000000005");
    memset(&s, 0, sizeof s);
    assert_int_equal(api_events_each(e, oldest + 3, 100, NULL, NULL, remember, &s), oldest + 3);
    assert_int_equal(s.n, 0);
    api_events_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(native_message_fields),
        cmocka_unit_test(refusals_name_the_field),
        cmocka_unit_test(sendgrid_and_postmark_shapes),
        cmocka_unit_test(raw_envelope),
        cmocka_unit_test(batch_limits),
        cmocka_unit_test(status_of_refusals),
        cmocka_unit_test(event_ring_pages_and_forgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
