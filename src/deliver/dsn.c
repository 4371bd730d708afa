/* Builds bounce messages. Only the original's header block is returned to
 * the sender: enough to identify the message without resending its body. */
#include "deliver/dsn.h"

#include "deliver/deliver.h"
#include "smtp/intake.h"
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

static void clean_line(const char *in, char *out, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < len; i++)
        out[j++] = (in[i] == '\r' || in[i] == '\n') ? ' ' : in[i];
    out[j] = 0;
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
    sb_printf(&b,
              "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
              "To: <%s>\r\n"
              "Subject: Undelivered Mail Returned to Sender\r\n"
              "Date: %s\r\n"
              "Message-ID: <%s.dsn.%lld@%s>\r\n"
              "Auto-Submitted: auto-replied\r\n"
              "MIME-Version: 1.0\r\n"
              "Content-Type: multipart/report; report-type=delivery-status;\r\n"
              "\tboundary=\"%s\"\r\n"
              "\r\n"
              "This is a MIME-encapsulated message.\r\n"
              "\r\n"
              "--%s\r\n"
              "Content-Type: text/plain; charset=utf-8\r\n"
              "\r\n"
              "Your message (queue id %s) could not be delivered to one or more\r\n"
              "recipients (%s). This is a permanent error; it will not be retried.\r\n\r\n",
              hostname, m->sender, date, ids, (long long)now, hostname, boundary, boundary, ids,
              why);
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++) {
        if (res->rcpt[i].cls != DELIVER_PERM)
            continue;
        char line[300];
        clean_line(res->rcpt[i].reply, line, sizeof line);
        sb_printf(&b, "<%s>: %s\r\n", m->rcpts[i], line);
    }
    sb_printf(&b,
              "\r\n--%s\r\n"
              "Content-Type: message/delivery-status\r\n"
              "\r\n"
              "Reporting-MTA: dns; %s\r\n"
              "X-Sluice-Queue-ID: %s\r\n"
              "Arrival-Date: ",
              boundary, hostname, ids);
    intake_date((time_t)m->received, date, sizeof date);
    sb_printf(&b, "%s\r\n", date);
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++) {
        if (res->rcpt[i].cls != DELIVER_PERM)
            continue;
        char status[16], line[300];
        status_of(res->rcpt[i].reply, status, sizeof status);
        clean_line(res->rcpt[i].reply, line, sizeof line);
        sb_printf(&b,
                  "\r\nFinal-Recipient: rfc822; %s\r\n"
                  "Action: failed\r\n"
                  "Status: %s\r\n"
                  "Diagnostic-Code: smtp; %s\r\n",
                  m->rcpts[i], status, line);
        if (res->upstream[0])
            sb_printf(&b, "Remote-MTA: dns; %s\r\n", res->upstream);
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
