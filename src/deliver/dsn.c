/* Builds bounce messages. Only the original's header block is returned to
 * the sender: enough to identify the message without resending its body. */
#include "deliver/dsn.h"

#include "deliver/deliver.h"
#include "mail/header_field.h"
#include "mail/intake.h"
#include "spool/spool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sbuf {
    char *p;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap + (size_t)n) * 2;
        char *np = realloc(b->p, nc);
        if (!np)
            return;
        b->p = np;
        b->cap = nc;
    }
}

/* Reply codes carry a status like "550 5.1.1 ..."; pull out "5.1.1". */
static void status_of(const char *reply, char *out, size_t len)
{
    const char *p = reply;
    while (*p && !(p[0] >= '2' && p[0] <= '5' && p[1] == '.'))
        p++;
    size_t n = strspn(p, "0123456789.");
    if (n >= 5 && n < len) {
        memcpy(out, p, n);
        out[n] = 0;
    } else {
        snprintf(out, len, "5.0.0");
    }
}

/* Every field of the report goes through header_field: the recipient
 * addresses and the upstream's reply text come from outside. */
__attribute__((format(printf, 3, 4))) static void sb_field(struct sbuf *b, const char *name,
                                                           const char *fmt, ...)
{
    char value[2048], field[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    if (header_field(field, sizeof field, name, value) > 0)
        sb_printf(b, "%s", field);
}

int dsn_build(struct spool *sp, const struct spool_msg *m, const struct deliver_result *res,
              const char *why, const char *hostname, int64_t now, char **out, size_t *len)
{
    struct sbuf b = {malloc(8192), 0, 8192};
    if (!b.p)
        return -1;
    char date[64], ids[17], boundary[64];
    intake_date((time_t)now, date, sizeof date);
    spool_id_str(m->id, ids);
    snprintf(boundary, sizeof boundary, "%s/%lld/%s", ids, (long long)now, "report");
    sb_field(&b, "From", "Mail Delivery System <MAILER-DAEMON@%s>", hostname);
    sb_field(&b, "To", "<%s>", m->sender);
    sb_field(&b, "Subject", "Undelivered Mail Returned to Sender");
    sb_field(&b, "Date", "%s", date);
    sb_field(&b, "Message-ID", "<%s.dsn.%lld@%s>", ids, (long long)now, hostname);
    sb_field(&b, "Auto-Submitted", "auto-replied");
    sb_field(&b, "MIME-Version", "1.0");
    sb_field(&b, "Content-Type", "multipart/report; report-type=delivery-status; boundary=\"%s\"",
             boundary);
    sb_printf(&b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n--%s\r\n", boundary);
    sb_field(&b, "Content-Type", "text/plain; charset=utf-8");
    char why_text[256];
    header_text_clean(why_text, sizeof why_text, why);
    sb_printf(&b,
              "\r\n"
              "Your message (queue id %s) could not be delivered to one or more\r\n"
              "recipients (%s). This is a permanent error; it will not be retried.\r\n\r\n",
              ids, why_text);
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++) {
        if (res->rcpt[i].cls != DELIVER_PERM)
            continue;
        char rcpt[300], line[300];
        header_text_clean(rcpt, sizeof rcpt, m->rcpts[i]);
        header_text_clean(line, sizeof line, res->rcpt[i].reply);
        sb_printf(&b, "<%s>: %s\r\n", rcpt, line);
    }
    sb_printf(&b, "\r\n--%s\r\n", boundary);
    sb_field(&b, "Content-Type", "message/delivery-status");
    sb_printf(&b, "\r\n");
    sb_field(&b, "Reporting-MTA", "dns; %s", hostname);
    sb_field(&b, "X-Sluice-Queue-ID", "%s", ids);
    intake_date((time_t)m->received, date, sizeof date);
    sb_field(&b, "Arrival-Date", "%s", date);
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++) {
        if (res->rcpt[i].cls != DELIVER_PERM)
            continue;
        char status[16];
        status_of(res->rcpt[i].reply, status, sizeof status);
        sb_printf(&b, "\r\n");
        sb_field(&b, "Final-Recipient", "rfc822; %s", m->rcpts[i]);
        sb_field(&b, "Action", "failed");
        sb_field(&b, "Status", "%s", status);
        sb_field(&b, "Diagnostic-Code", "smtp; %s", res->rcpt[i].reply);
        if (res->upstream[0])
            sb_field(&b, "Remote-MTA", "dns; %s", res->upstream);
    }
    sb_printf(&b, "\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary);
    char *orig = NULL;
    size_t olen = 0;
    if (spool_read(sp, m->id, &orig, &olen) == 0) {
        char *end = strstr(orig, "\r\n\r\n");
        size_t hl = end ? (size_t)(end - orig) + 2 : olen;
        sb_printf(&b, "%.*s", (int)hl, orig);
        free(orig);
    }
    sb_printf(&b, "\r\n--%s--\r\n", boundary);
    *out = b.p;
    *len = b.len;
    return 0;
}
