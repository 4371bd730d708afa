/* The mail transaction of the delivery client: MAIL, RCPT and DATA (pipelined
 * when the server offers it), the body with its final dot, and the status
 * each recipient ends with. */
#include "deliver/client.h"
#include "deliver/client_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/tls_client.h"

/* Body pieces at least this long are referenced from the caller's buffer
 * instead of copied; shorter ones are cheaper to copy than a chain. */
#define BODY_REFERENCE_MIN 2048

/* RFC 5321 4.5.3.1.3: a path is at most 256 octets. Longer addresses are
 * refused locally rather than sent. */
#define SMTP_PATH_MAX 256

/* ---- transactions --------------------------------------------------- */

static void set_status(struct smtp_client_status *s, const struct smtp_reply *r)
{
    s->code = r->code;
    memcpy(s->enhanced, r->enhanced, sizeof(s->enhanced));
    memcpy(s->text, r->text, sizeof(s->text));
    s->from_server = true;
}

static void set_local_status(struct smtp_client_status *s, int code, const char *enhanced,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void set_local_status(struct smtp_client_status *s, int code, const char *enhanced,
                             const char *fmt, ...)
{
    s->code = code;
    snprintf(s->enhanced, sizeof(s->enhanced), "%s", enhanced);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->text, sizeof(s->text), fmt, ap);
    va_end(ap);
    s->from_server = false;
}

/* Ends the transaction and reports it; the connection is idle again.
 * still_open: the server may still hold the transaction (MAIL accepted, no
 * final reply to "."), so the next one starts with RSET. */
void client_finish_message(struct smtp_client *c, enum smtp_client_stage stage, bool still_open)
{
    struct smtp_client_result *res = &c->result;
    res->stage = stage;
    res->rcpts = c->rcpt_res;
    res->n_rcpts = c->msg.n_rcpts;
    for (size_t i = 0; i < c->msg.n_rcpts; i++) {
        struct smtp_client_rcpt_result *rr = &c->rcpt_res[i];
        if (stage == SMTP_CLIENT_STAGE_LOCAL || stage == SMTP_CLIENT_STAGE_MAIL) {
            rr->status = res->status;
            rr->rcpt_accepted = false;
        } else if (rr->rcpt_accepted) {
            rr->status = res->status;
        }
    }
    if (stage != SMTP_CLIENT_STAGE_LOCAL)
        c->needs_rset = still_open;
    if (stage == SMTP_CLIENT_STAGE_DOT && res->status.code >= 200 && res->status.code <= 299)
        c->sent++;
    client_disarm(c);
    client_enter_state(c, ST_READY);
    if (c->cb.on_sent != NULL)
        c->cb.on_sent(c, res, c->cb_arg);
}

static void add_body_piece(struct evbuffer *ob, const char *p, size_t n)
{
    if (n >= BODY_REFERENCE_MIN)
        evbuffer_add_reference(ob, p, n, NULL, NULL);
    else if (n > 0)
        evbuffer_add(ob, p, n);
}

/* Queues the message dot-stuffed (RFC 5321 4.5.2) followed by the final
 * ".": one write for the body tail and the terminator. Lines are stuffed
 * after any LF, so a bare LF cannot turn a "." line into an end of data. */
static void write_body(struct smtp_client *c)
{
    struct evbuffer *ob = client_out(c);
    const char *p = c->msg.data;
    size_t len = c->msg.len;
    const char *end = p + len;
    const char *seg = p;

    if (len > 0 && p[0] == '.')
        evbuffer_add(ob, ".", 1);
    while (seg < end) {
        const char *hit = memmem(seg, (size_t)(end - seg), "\n.", 2);
        if (hit == NULL)
            break;
        add_body_piece(ob, seg, (size_t)(hit + 1 - seg));
        evbuffer_add(ob, ".", 1);
        seg = hit + 1;
    }
    add_body_piece(ob, seg, (size_t)(end - seg));
    if (len == 0 || (len >= 2 && end[-2] == '\r' && end[-1] == '\n'))
        evbuffer_add(ob, ".\r\n", 3);
    else if (end[-1] == '\r')
        evbuffer_add(ob, "\n.\r\n", 4);
    else
        evbuffer_add(ob, "\r\n.\r\n", 5);
}

static void send_mail(struct smtp_client *c)
{
    size_t size = c->msg.size != 0 ? c->msg.size : c->msg.len;
    bool eight = (c->msg.flags & SMTP_CLIENT_MSG_8BIT) && c->ehlo.eightbitmime;
    char size_param[32] = "";
    if (c->ehlo.size)
        snprintf(size_param, sizeof(size_param), " SIZE=%zu", size);
    client_send_line(c, "MAIL FROM:<%s>%s%s%s", c->msg.sender, size_param,
                     eight ? " BODY=8BITMIME" : "", c->smtputf8 ? " SMTPUTF8" : "");
}

static void send_rcpt(struct smtp_client *c, size_t i)
{
    client_send_line(c, "RCPT TO:<%s>", c->msg.rcpts[i]);
}

/* The one place commands of a transaction are written. */
static void client_send_ahead(struct smtp_client *c)
{
    while (c->pipelined || c->replies_due == 0) {
        switch (c->out) {
        case SEND_NOTHING:
            if (c->needs_rset) {
                client_send_line(c, "RSET");
                c->out = SEND_RSET;
                break;
            }
            /* fall through */
        case SEND_RSET:
            send_mail(c);
            c->out = SEND_MAIL;
            break;
        case SEND_MAIL:
        case SEND_RCPTS:
            if (c->rcpt_sent < c->msg.n_rcpts) {
                send_rcpt(c, c->rcpt_sent++);
                c->out = SEND_RCPTS;
                break;
            }
            client_send_line(c, "DATA");
            c->out = SEND_DATA;
            break;
        case SEND_DATA:
            return; /* the body goes with the 354 */
        }
        c->replies_due++;
    }
}

void client_transaction_reply(struct smtp_client *c)
{
    struct smtp_reply *r = &c->reply;
    bool ok = r->code >= 200 && r->code <= 299;

    /* RFC 5321 3.8: 421 means the server is closing the channel. */
    if (r->code == 421) {
        client_fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "service not available");
        return;
    }
    if (c->state == ST_RSET || c->state == ST_MAIL || c->state == ST_RCPT ||
        (c->state == ST_DATA && c->replies_due > 0))
        c->replies_due--;
    switch (c->state) {
    case ST_RSET:
        if (!ok) {
            client_fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "RSET rejected");
            return;
        }
        c->needs_rset = false;
        client_send_ahead(c);
        client_enter_state(c, ST_MAIL);
        client_arm(c, c->to.mail_ms);
        return;
    case ST_MAIL:
        c->mail_ok = ok;
        if (!ok)
            set_status(&c->result.status, r);
        if (!c->pipelined && !ok) {
            client_finish_message(c, SMTP_CLIENT_STAGE_MAIL, false);
            return;
        }
        client_send_ahead(c);
        client_enter_state(c, ST_RCPT);
        client_arm(c, c->to.rcpt_ms);
        return;
    case ST_RCPT: {
        struct smtp_client_rcpt_result *rr = &c->rcpt_res[c->rcpt_replied++];
        set_status(&rr->status, r);
        rr->rcpt_accepted = ok && c->mail_ok;
        if (rr->rcpt_accepted)
            c->result.n_accepted++;
        if (c->rcpt_replied < c->msg.n_rcpts) {
            client_send_ahead(c);
            client_arm(c, c->to.rcpt_ms);
            return;
        }
        if (c->mail_ok && c->result.n_accepted == 0) {
            /* The last rejection stands for the message. */
            set_local_status(&c->result.status, r->code, r->enhanced,
                             "all recipients were rejected (last: %s)", r->text);
            c->result.status.from_server = true;
        }
        if (!c->pipelined && c->result.n_accepted == 0) {
            /* RSET goes out lazily with the next message, or never when
             * QUIT comes first. */
            client_finish_message(c, SMTP_CLIENT_STAGE_RCPT, true);
            return;
        }
        client_send_ahead(c);
        client_enter_state(c, ST_DATA);
        client_arm(c, c->to.data_init_ms);
        return;
    }
    case ST_DATA:
        if (r->code == 354) {
            /* RFC 2920 3.1: a server may accept DATA although every RCPT
             * failed; an empty body then ends the transaction. */
            if (c->mail_ok && c->result.n_accepted > 0) {
                write_body(c);
                c->discard_dot = false;
            } else {
                evbuffer_add(client_out(c), ".\r\n", 3);
                c->discard_dot = true;
            }
            client_enter_state(c, ST_DOT);
            client_arm(c, c->to.data_final_ms);
            return;
        }
        if (!c->mail_ok) {
            client_finish_message(c, SMTP_CLIENT_STAGE_MAIL, false);
        } else if (c->result.n_accepted == 0) {
            client_finish_message(c, SMTP_CLIENT_STAGE_RCPT, true);
        } else {
            set_status(&c->result.status, r);
            client_finish_message(c, SMTP_CLIENT_STAGE_DATA, true);
        }
        return;
    case ST_DOT:
        if (c->discard_dot) {
            client_finish_message(c, c->mail_ok ? SMTP_CLIENT_STAGE_RCPT : SMTP_CLIENT_STAGE_MAIL,
                                  false);
            return;
        }
        set_status(&c->result.status, r);
        client_finish_message(c, SMTP_CLIENT_STAGE_DOT, false);
        return;
    default:
        return;
    }
}

/* An address goes between angle brackets on one command line. */
static int check_address(const char *a, bool *non_ascii)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)a; *p != '\0'; p++, n++) {
        if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
            return -1;
        if (*p >= 0x80)
            *non_ascii = true;
    }
    return n <= SMTP_PATH_MAX ? 0 : -1;
}

int smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *msg)
{
    if (!client_alive(c) || c->quitting)
        return -ENOTCONN;
    if (c->state != ST_READY)
        return -EBUSY;
    if (msg == NULL || msg->n_rcpts == 0 || msg->rcpts == NULL ||
        (msg->data == NULL && msg->len > 0))
        return -EINVAL;
    bool non_ascii = false;
    if (check_address(msg->sender != NULL ? msg->sender : "", &non_ascii) < 0)
        return -EINVAL;
    for (size_t i = 0; i < msg->n_rcpts; i++)
        if (msg->rcpts[i] == NULL || msg->rcpts[i][0] == '\0' ||
            check_address(msg->rcpts[i], &non_ascii) < 0)
            return -EINVAL;
    if (msg->n_rcpts > c->rcpt_cap) {
        size_t cap = c->rcpt_cap ? c->rcpt_cap : 8;
        while (cap < msg->n_rcpts)
            cap *= 2;
        struct smtp_client_rcpt_result *v = realloc(c->rcpt_res, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        c->rcpt_res = v;
        c->rcpt_cap = cap;
    }
    memset(c->rcpt_res, 0, msg->n_rcpts * sizeof(*c->rcpt_res));
    memset(&c->result, 0, sizeof(c->result));
    c->msg = *msg;
    if (c->msg.sender == NULL)
        c->msg.sender = "";
    c->rcpt_replied = 0;
    c->mail_ok = false;
    c->discard_dot = false;
    c->smtputf8 = (msg->flags & SMTP_CLIENT_MSG_SMTPUTF8) || non_ascii;
    size_t size = msg->size != 0 ? msg->size : msg->len;

    /* Refusals decided here are permanent for this upstream: no silent
     * downgrade of addresses or 8-bit content (RFC 6531 3.4, RFC 6152). */
    struct smtp_client_status *st = &c->result.status;
    bool refused = true;
    if (c->smtputf8 && !c->ehlo.smtputf8)
        set_local_status(st, 553, "5.6.7",
                         "upstream %s lacks SMTPUTF8, required by internationalized addresses",
                         c->host);
    else if ((msg->flags & SMTP_CLIENT_MSG_8BIT) && !c->ehlo.eightbitmime)
        set_local_status(st, 554, "5.6.3", "upstream %s lacks 8BITMIME, message has 8-bit data",
                         c->host);
    else if (c->ehlo.size && c->ehlo.size_max > 0 && size > c->ehlo.size_max)
        set_local_status(st, 552, "5.3.4", "message size %zu exceeds upstream %s limit %llu", size,
                         c->host, c->ehlo.size_max);
    else
        refused = false;
    if (refused) {
        client_enter_state(c, ST_LOCAL_REJECT);
        event_active(c->deferred, EV_TIMEOUT, 1);
        return 0;
    }

    /* RFC 2920: with PIPELINING, RSET, MAIL, every RCPT and DATA in one write */
    c->pipelined = c->ehlo.pipelining;
    c->out = SEND_NOTHING;
    c->rcpt_sent = 0;
    c->replies_due = 0;
    client_send_ahead(c);
    client_enter_state(c, c->needs_rset ? ST_RSET : ST_MAIL);
    client_arm(c, c->needs_rset ? c->to.command_ms : c->to.mail_ms);
    return 0;
}
