/* Message content inside a submission session: DATA and BDAT (RFC 5321
 * 4.1.1.4, RFC 3030) through the smuggling-safe decoder straight into the
 * intake transaction (intake/submit.h), which keeps it under the in-flight
 * budget, hashes it for DKIM while it streams and decides at its end; 250
 * only once the spool says durable. */
#include "smtp/session_int.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "policy/policy.h"
#include "intake/submit.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void content_done(struct session *s);

static void begin_content(struct session *s, bool dot_mode)
{
    smtp_data_decoder_init(&s->dec, dot_mode);
    s->data_total = 0;
    session_set_timeout(s, s->r->cfg->data_timeout);
    s->clock.content_ms = session_now_ms();
    s->clock.content_bytes = 0;
}

void session_cmd_data(struct session *s, const struct smtp_command *c)
{
    if (c->arg_len) {
        session_command_error(s, "501 5.5.4 DATA takes no arguments");
        return;
    }
    if (s->mp.body == SMTP_BODY_BINARYMIME) {
        session_reply(s, "503 5.5.1 BINARYMIME requires BDAT");
        return;
    }
    begin_content(s, true);
    session_enter_state(s, ST_DATA);
    session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    session_deadline_arm(s);
}

void session_cmd_bdat(struct session *s, const struct smtp_command *c)
{
    char arg[64];
    if (c->arg_len == 0 || c->arg_len >= sizeof arg) {
        session_command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    memcpy(arg, c->arg, c->arg_len);
    arg[c->arg_len] = 0;
    char *end;
    errno = 0;
    unsigned long long size = strtoull(arg, &end, 10);
    bool last = false;
    if (end == arg || errno || arg[0] == '-') {
        session_command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    while (*end == ' ')
        end++;
    if (strcasecmp(end, "LAST") == 0)
        last = true;
    else if (*end) {
        session_command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    if (!s->bdat_used) {
        begin_content(s, false);
        s->bdat_used = true;
    }
    s->bdat_left = size;
    s->bdat_last = last;
    session_enter_state(s, ST_BDAT);
    session_set_timeout(s, s->r->cfg->data_timeout);
    session_deadline_arm(s);
}

/* ---- end of content: the intake transaction decides ---- */

static void committed(void *arg, const struct submit_result *res)
{
    struct session *s = arg;
    s->busy--;
    if (s->dead) {
        session_close(s);
        return;
    }
    session_reply(s, "%s", res->reply);
    session_after_transaction(s);
    session_set_timeout(s, s->r->cfg->command_timeout);
    session_process_input(s);
}

static void content_done(struct session *s)
{
    const struct config *cfg = s->r->cfg;
    session_set_timeout(s, cfg->command_timeout);
    if (s->bdat_error || !s->tx) {
        s->r->n.rejected++;
        session_reply(s, "%s", s->bdat_error ? s->bdat_error : "503 5.5.1 Need MAIL and RCPT");
        session_after_transaction(s);
        return;
    }
    struct submit_framing f = {.bare_lf = s->dec.bare_lf,
                               .bare_cr = s->dec.bare_cr,
                               .nul_byte = s->dec.nul_byte,
                               .eight_bit = s->dec.eight_bit,
                               .longest_line = s->dec.longest_line};
    submit_set_framing(s->tx, &f);
    struct authz_refusal ref;
    if (submit_finish(s->tx, committed, s, &ref) != SUBMIT_OK) {
        session_reply(s, "%s", ref.reply);
        session_after_transaction(s);
        return;
    }
    session_enter_state(s, ST_COMMIT);
    s->busy++;
}

static void bdat_chunk_done(struct session *s)
{
    if (!s->bdat_last) {
        session_enter_state(s, ST_BDAT_WAIT);
        struct authz_refusal ref;
        if (s->tx && submit_early_refusal(s->tx, &ref)) {
            session_policy_refused(s, &ref);
            session_after_transaction(s);
            return;
        }
        if (s->bdat_error) {
            session_reply(s, "%s", s->bdat_error);
            session_after_transaction(s);
            return;
        }
        session_reply(s, "250 2.0.0 %zu octets received", s->data_total);
        return;
    }
    smtp_data_decoder_finish(&s->dec);
    content_done(s);
}

/* Consumes DATA or BDAT content from the input. Returns true when the
 * content ended (and was handled), false when more input is needed. */
bool session_consume_content(struct session *s, struct evbuffer *in)
{
    while (evbuffer_get_length(in) > 0 || (s->st == ST_BDAT && s->bdat_left == 0)) {
        if (s->st == ST_BDAT && s->bdat_left == 0) {
            bdat_chunk_done(s);
            return true;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t avail = v.iov_len;
        if (s->st == ST_BDAT && avail > s->bdat_left)
            avail = (size_t)s->bdat_left;
        /* content that is not kept is decoded in place, in the input
         * buffer, so refusing a message never needs memory for it */
        char *out = s->tx && !s->bdat_error ? submit_space(s->tx, avail) : NULL;
        if (!out)
            out = v.iov_base;
        size_t out_len = 0;
        bool done = false;
        size_t used = smtp_data_decode(&s->dec, v.iov_base, avail, out, &out_len, &done);
        if (s->tx && !s->bdat_error)
            submit_wrote(s->tx, out_len);
        s->data_total += out_len;
        s->clock.content_bytes += used;
        evbuffer_drain(in, used);
        if (s->st == ST_BDAT) {
            s->bdat_left -= used;
            continue;
        }
        if (done) {
            content_done(s);
            return true;
        }
    }
    return false;
}
