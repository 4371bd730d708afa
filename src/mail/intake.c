/* Builds the trace and missing identity headers of an accepted message.
 * Every field goes through header_field, which keeps client-chosen text
 * (EHLO name, login) from carrying line breaks into the message. */
#include "mail/intake.h"

#include "mail/header_field.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

void intake_date(time_t t, char *buf, size_t len)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, len, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static bool name_is(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0)
        return false;
    /* RFC 5322 allows WSP between the field name and the colon (obs-syntax) */
    size_t i = k;
    while (i < n && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i < n && line[i] == ':';
}

static void copy_msgid(const char *v, size_t n, char *out, size_t outlen)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    const char *lt = memchr(v, '<', n);
    const char *gt = lt ? memchr(lt, '>', n - (size_t)(lt - v)) : NULL;
    if (lt && gt) {
        v = lt + 1;
        n = (size_t)(gt - lt - 1);
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, v, n);
    out[n] = 0;
}

void intake_build(const char *msg, size_t len, const struct intake_info *info,
                  struct intake_result *out)
{
    memset(out, 0, sizeof *out);
    bool has_date = false, has_msgid = false;
    size_t off = 0;
    out->header_end = len;
    while (off < len) {
        const char *line = msg + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t n = nl ? (size_t)(nl - line) + 1 : len - off;
        if (n <= 2 && (line[0] == '\r' || line[0] == '\n')) {
            out->header_end = off;
            break;
        }
        if (line[0] != ' ' && line[0] != '\t' && !memchr(line, ':', n)) {
            /* not a header field: the header block ended without a blank line */
            out->header_end = off;
            break;
        }
        if (name_is(line, n, "date"))
            has_date = true;
        else if (name_is(line, n, "from"))
            out->has_from = true;
        else if (name_is(line, n, "message-id")) {
            has_msgid = true;
            const char *colon = memchr(line, ':', n);
            size_t vn = n - (size_t)(colon + 1 - line);
            /* include folded continuation lines */
            size_t end = off + n;
            while (end < len && (msg[end] == ' ' || msg[end] == '\t')) {
                const char *nl2 = memchr(msg + end, '\n', len - end);
                size_t m = nl2 ? (size_t)(nl2 - (msg + end)) + 1 : len - end;
                vn += m;
                end += m;
            }
            copy_msgid(colon + 1, vn, out->message_id, sizeof out->message_id);
        }
        off += n;
    }

    char date[64];
    intake_date(info->now, date, sizeof date);
    int n;
    if (!has_msgid || !out->message_id[0]) {
        snprintf(out->message_id, sizeof out->message_id, "%s.%ld@%s", info->queue_id,
                 (long)info->now, info->hostname);
        if (!has_msgid &&
            (n = header_fieldf(out->append + out->append_len, sizeof out->append - out->append_len,
                               "Message-ID", "<%s>", out->message_id)) > 0)
            out->append_len += (size_t)n;
    }
    if (!has_date && (n = header_field(out->append + out->append_len,
                                       sizeof out->append - out->append_len, "Date", date)) > 0)
        out->append_len += (size_t)n;

    /* RFC 3848 / RFC 6531 protocol names */
    char proto[16];
    snprintf(proto, sizeof proto, "%s%s%s%s",
             info->smtputf8 ? "UTF8SMTP" : (info->esmtp ? "ESMTP" : "SMTP"),
             info->tls_desc ? "S" : "", info->auth_user ? "A" : "", "");
    if (!info->esmtp && !info->smtputf8)
        snprintf(proto, sizeof proto, "SMTP");
    char tls[160] = "", auth[128] = "";
    if (info->tls_desc)
        snprintf(tls, sizeof tls, " (using %.140s)", info->tls_desc);
    if (info->auth_user)
        snprintf(auth, sizeof auth, " (authenticated as %.100s)", info->auth_user);
    n = header_fieldf(out->prepend, sizeof out->prepend, "Received",
                      "from %.100s ([%s]) by %.200s (Sluice) with %s id %s%s%s; %s",
                      info->helo && *info->helo ? info->helo : "unknown", info->client_ip,
                      info->hostname, proto, info->queue_id, tls, auth, date);
    out->prepend_len = n > 0 ? (size_t)n : 0;
}
