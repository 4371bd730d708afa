/* Export and import of queued messages (transfer.h). The file is JSON lines
 * so that it can be read, checked and split with ordinary tools; each line
 * is parsed by transfer_parse_line, which trusts nothing in it: the envelope
 * it yields is written into the spool as text lines, so line breaks and
 * control bytes are refused. */
#include "queue/transfer.h"

#include "core/base64.h"
#include "queue/queue.h"
#include "spool/spool.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TRANSFER_MAX_RCPTS 100000

/* ---- export ---- */

struct export_ctx {
    struct spool *s;
    FILE *f;
    size_t n;
    char err[256];
};

static json_t *msg_line(struct spool *s, const struct spool_msg *m, char *err, size_t errlen)
{
    char *data = NULL, ids[17];
    size_t len = 0;
    int rc = spool_read(s, m->id, &data, &len);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read message %s: %s", spool_id_str(m->id, ids),
                 strerror(-rc));
        return NULL;
    }
    char *b64 = malloc(BASE64_ENCODED_SIZE(len));
    if (!b64) {
        free(data);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    base64_encode(data, len, b64);
    free(data);
    json_t *rcpts = json_array(), *states = json_array();
    for (uint32_t i = 0; i < m->n_rcpts; i++) {
        json_array_append_new(rcpts, json_string(m->rcpts[i]));
        json_array_append_new(states, json_integer(m->rcpt_state[i]));
    }
    json_t *o = json_pack("{s:s,s:s,s:o,s:o,s:I,s:I,s:i,s:I}", "id", spool_id_str(m->id, ids),
                          "sender", m->sender, "rcpts", rcpts, "rcpt_state", states, "flags",
                          (json_int_t)m->flags, "received", (json_int_t)m->received, "state",
                          (int)m->state, "attempts", (json_int_t)m->attempts);
    json_object_set_new(o, "meta", m->meta ? json_string(m->meta) : json_null());
    json_object_set_new(o, "last_reply", m->last_reply ? json_string(m->last_reply) : json_null());
    json_object_set_new(o, "data", json_string(b64));
    free(b64);
    return o;
}

static void export_one(void *arg, const struct spool_msg *m)
{
    struct export_ctx *c = arg;
    if (c->err[0])
        return;
    json_t *o = msg_line(c->s, m, c->err, sizeof c->err);
    if (!o)
        return;
    if (json_dumpf(o, c->f, JSON_COMPACT) < 0 || fputc('\n', c->f) == EOF)
        snprintf(c->err, sizeof c->err, "cannot write: %s", strerror(errno));
    else
        c->n++;
    json_decref(o);
}

int transfer_export(struct spool *s, FILE *f, size_t *n, char *err, size_t errlen)
{
    struct export_ctx c = {.s = s, .f = f};
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    json_t *head = json_pack("{s:i,s:s,s:I}", "sluice_queue_export", TRANSFER_FORMAT, "host", host,
                             "created", (json_int_t)time(NULL));
    if (json_dumpf(head, f, JSON_COMPACT) < 0 || fputc('\n', f) == EOF)
        snprintf(c.err, sizeof c.err, "cannot write: %s", strerror(errno));
    json_decref(head);
    if (!c.err[0])
        spool_foreach(s, export_one, &c);
    if (!c.err[0] && fprintf(f, "{\"end\":%zu}\n", c.n) < 0)
        snprintf(c.err, sizeof c.err, "cannot write: %s", strerror(errno));
    *n = c.n;
    if (c.err[0]) {
        snprintf(err, errlen, "%s", c.err);
        return -1;
    }
    return 0;
}

/* ---- parsing ---- */

/* Envelope text: no control bytes at all (it becomes spool text lines). */
static bool clean(const char *s, bool newlines_ok)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch < 0x20 && !(newlines_ok && ch == '\n')) || ch == 0x7f)
            return false;
    }
    return true;
}

void transfer_msg_free(struct transfer_msg *m)
{
    for (uint32_t i = 0; m->rcpts && i < m->n_rcpts; i++)
        free(m->rcpts[i]);
    free(m->rcpts);
    free(m->rcpt_state);
    free(m->sender);
    free(m->meta);
    free(m->last_reply);
    free(m->data);
    memset(m, 0, sizeof *m);
}

static int fail(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s", what);
    return -1;
}

static int parse_object(json_t *o, struct transfer_msg *m, char *err, size_t errlen)
{
    json_t *id = json_object_get(o, "id"), *sender = json_object_get(o, "sender");
    json_t *rcpts = json_object_get(o, "rcpts"), *states = json_object_get(o, "rcpt_state");
    json_t *flags = json_object_get(o, "flags"), *received = json_object_get(o, "received");
    json_t *state = json_object_get(o, "state"), *data = json_object_get(o, "data");
    json_t *meta = json_object_get(o, "meta"), *reply = json_object_get(o, "last_reply");
    if (!json_is_string(id) || spool_id_parse(json_string_value(id), &m->id) < 0)
        return fail(err, errlen, "\"id\" must be 16 hex digits");
    if (!json_is_string(sender) || !clean(json_string_value(sender), false))
        return fail(err, errlen, "\"sender\" must be a string without control characters");
    if (!json_is_array(rcpts) || !json_is_array(states) ||
        json_array_size(rcpts) != json_array_size(states) || json_array_size(rcpts) == 0 ||
        json_array_size(rcpts) > TRANSFER_MAX_RCPTS)
        return fail(err, errlen,
                    "\"rcpts\" and \"rcpt_state\" must be arrays of the same length, 1 to 100000");
    if (!json_is_integer(flags) || json_integer_value(flags) < 0 ||
        json_integer_value(flags) > UINT32_MAX)
        return fail(err, errlen, "\"flags\" must be an unsigned 32-bit integer");
    if (!json_is_integer(received) || json_integer_value(received) < 0)
        return fail(err, errlen, "\"received\" must be a unix time");
    if (!json_is_integer(state) || json_integer_value(state) < SPOOL_MSG_ACTIVE ||
        json_integer_value(state) > SPOOL_MSG_DEAD)
        return fail(err, errlen, "\"state\" must be 0 (active), 1 (held) or 2 (dead)");
    if (!(json_is_null(meta) || !meta ||
          (json_is_string(meta) && clean(json_string_value(meta), true))))
        return fail(err, errlen, "\"meta\" must be null or key=value lines");
    if (!(json_is_null(reply) || !reply ||
          (json_is_string(reply) && clean(json_string_value(reply), false))))
        return fail(err, errlen, "\"last_reply\" must be null or one line of text");
    if (!json_is_string(data))
        return fail(err, errlen, "\"data\" must be base64 text");
    m->n_rcpts = (uint32_t)json_array_size(rcpts);
    m->rcpts = calloc(m->n_rcpts, sizeof *m->rcpts);
    m->rcpt_state = calloc(m->n_rcpts, 1);
    if (!m->rcpts || !m->rcpt_state)
        return fail(err, errlen, "out of memory");
    for (uint32_t i = 0; i < m->n_rcpts; i++) {
        json_t *r = json_array_get(rcpts, i), *st = json_array_get(states, i);
        if (!json_is_string(r) || !*json_string_value(r) || !clean(json_string_value(r), false))
            return fail(err, errlen,
                        "a recipient must be a non-empty string without control "
                        "characters");
        if (!json_is_integer(st) || json_integer_value(st) < SPOOL_RCPT_PENDING ||
            json_integer_value(st) > SPOOL_RCPT_FAILED)
            return fail(err, errlen,
                        "a recipient state must be 0 (pending), 1 (delivered) or "
                        "2 (failed)");
        m->rcpts[i] = strdup(json_string_value(r));
        if (!m->rcpts[i])
            return fail(err, errlen, "out of memory");
        m->rcpt_state[i] = (uint8_t)json_integer_value(st);
    }
    m->sender = strdup(json_string_value(sender));
    m->meta = json_is_string(meta) ? strdup(json_string_value(meta)) : NULL;
    m->last_reply = json_is_string(reply) ? strdup(json_string_value(reply)) : NULL;
    m->flags = (uint32_t)json_integer_value(flags);
    m->received = (int64_t)json_integer_value(received);
    m->state = (int)json_integer_value(state);
    size_t blen = json_string_length(data);
    m->data = malloc(blen / 4 * 3 + 1);
    if (!m->sender || !m->data)
        return fail(err, errlen, "out of memory");
    long n = base64_decode(json_string_value(data), blen, m->data, 0);
    if (n < 0)
        return fail(err, errlen, "\"data\" is not valid base64");
    m->data_len = (size_t)n;
    return 0;
}

int transfer_parse_line(const char *line, size_t len, struct transfer_msg *m,
                        long long *trailer_count, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    *trailer_count = -1;
    json_error_t je;
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        snprintf(err, errlen, "not a JSON object: %s", o ? "another JSON value" : je.text);
        return -1;
    }
    int rc;
    json_t *fmt = json_object_get(o, "sluice_queue_export"), *end = json_object_get(o, "end");
    if (fmt) {
        rc = json_is_integer(fmt) && json_integer_value(fmt) == TRANSFER_FORMAT
                 ? 1
                 : fail(err, errlen, "unknown export format (this version reads format 1)");
    } else if (end) {
        rc = json_is_integer(end) && json_integer_value(end) >= 0
                 ? 1
                 : fail(err, errlen, "\"end\" must be the number of messages");
        if (rc == 1)
            *trailer_count = json_integer_value(end);
    } else {
        rc = parse_object(o, m, err, errlen);
        if (rc < 0)
            transfer_msg_free(m);
    }
    json_decref(o);
    return rc;
}
