/* sendmail -bs: an SMTP dialogue on standard input and output, as programs
 * that speak SMTP to a local sendmail expect. Each message is submitted to
 * the relay (or kept in the outbox) before the reply to its final "." is
 * given, so a 250 here carries the same promise as exit status 0. */
#include "cli/sendmail.h"

#include "core/config.h"
#include "mail/address.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 5321 4.5.3.1.4/6: command line 512, text line 1000 octets with CRLF. */
#define BS_COMMAND_MAX 512
#define BS_TEXT_MAX 1000

enum bs_state {
    BS_READY, /* no transaction: EHLO, MAIL, RSET, NOOP, QUIT */
    BS_MAIL,  /* MAIL given: RCPT */
    BS_RCPT,  /* at least one RCPT: RCPT, DATA */
};

static void reply(FILE *out, const char *text)
{
    fputs(text, out);
    fputs("\r\n", out);
    fflush(out);
}

static bool verb(const char *line, const char *v)
{
    size_t n = strlen(v);
    return strncasecmp(line, v, n) == 0 && (line[n] == '\0' || line[n] == ' ');
}

/* Reads DATA up to the lone "."; undoes the dot-stuffing. 0, or -1 at EOF. */
static int read_data(FILE *in, struct sm_message *m, bool *too_long)
{
    char *line = NULL;
    size_t cap = 0, size = 0;
    ssize_t n;
    *too_long = false;
    while ((n = getline(&line, &cap, in)) > 0) {
        size_t l = (size_t)n;
        if (line[l - 1] == '\n')
            l--;
        if (l && line[l - 1] == '\r')
            l--;
        if (l == 1 && line[0] == '.') {
            free(line);
            if (!m->data && !(m->data = calloc(1, 1)))
                return -1;
            return 0;
        }
        if (l + 2 > BS_TEXT_MAX)
            *too_long = true;
        const char *p = line[0] == '.' ? line + 1 : line;
        size_t pl = line[0] == '.' ? l - 1 : l;
        if (m->len + pl + 3 > size) {
            size_t ns = size ? size * 2 : 65536;
            while (ns < m->len + pl + 3)
                ns *= 2;
            char *d = realloc(m->data, ns);
            if (!d)
                break;
            m->data = d;
            size = ns;
        }
        memcpy(m->data + m->len, p, pl);
        m->len += pl;
        memcpy(m->data + m->len, "\r\n", 3);
        m->len += 2;
    }
    free(line);
    return -1;
}

static void reset(struct sm_message *m, enum bs_state *st)
{
    sm_message_free(m);
    *st = BS_READY;
}

/* The submission's exit status as the reply to the final ".". */
static const char *data_reply(int status)
{
    switch (status) {
    case SM_EX_OK:
        return "250 2.0.0 Ok: sent, or kept in the outbox for later delivery";
    case SM_EX_NOUSER:
        return "550 5.1.1 recipient refused by the relay (see standard error)";
    case SM_EX_DATAERR:
        return "554 5.6.0 message refused by the relay (see standard error)";
    case SM_EX_NOPERM:
        return "454 4.7.0 the relay refused this sender's credential";
    default:
        return "451 4.3.0 not sent and not kept: try again later";
    }
}

int sm_smtp_dialogue(const struct config *cfg, const struct sm_submit_conf *c, FILE *in, FILE *out)
{
    char greeting[400];
    snprintf(greeting, sizeof greeting, "220 %s ESMTP Sluice sendmail", cfg->hostname);
    reply(out, greeting);
    enum bs_state st = BS_READY;
    struct sm_message m = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) > 0) {
        size_t l = (size_t)n;
        if (line[l - 1] == '\n')
            line[--l] = '\0';
        if (l && line[l - 1] == '\r')
            line[--l] = '\0';
        if (l + 2 > BS_COMMAND_MAX || memchr(line, '\0', l) || strchr(line, '\r')) {
            reply(out, "500 5.5.2 line too long or with a NUL or bare CR");
            continue;
        }
        if (verb(line, "EHLO")) {
            reset(&m, &st);
            char r[400];
            snprintf(r, sizeof r,
                     "250-%s\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES",
                     cfg->hostname);
            reply(out, r);
        } else if (verb(line, "HELO")) {
            reset(&m, &st);
            reply(out, "250 Ok");
        } else if (verb(line, "MAIL")) {
            struct smtp_path p;
            struct smtp_mail_params mp;
            enum smtp_addr_error e;
            if (st != BS_READY) {
                reply(out, "503 5.5.1 MAIL already given (RSET first)");
            } else if ((e = smtp_parse_mail(line + 5, l > 5 ? l - 5 : 0, &p, &mp)) !=
                       SMTP_ADDR_OK) {
                char r[300];
                snprintf(r, sizeof r, "501 5.1.7 %s", smtp_addr_error_text(e));
                reply(out, r);
            } else if (!(m.from = strdup(p.addr))) {
                reply(out, "451 4.3.0 out of memory");
            } else {
                st = BS_MAIL;
                reply(out, "250 2.1.0 Ok");
            }
        } else if (verb(line, "RCPT")) {
            struct smtp_path p;
            struct smtp_rcpt_params rp;
            enum smtp_addr_error e;
            char **v;
            if (st == BS_READY) {
                reply(out, "503 5.5.1 MAIL first");
            } else if ((e = smtp_parse_rcpt(line + 5, l > 5 ? l - 5 : 0, true, &p, &rp)) !=
                       SMTP_ADDR_OK) {
                char r[300];
                snprintf(r, sizeof r, "501 5.1.3 %s", smtp_addr_error_text(e));
                reply(out, r);
            } else if (m.nrcpts >= 1000) {
                reply(out, "452 4.5.3 too many recipients");
            } else if (!(v = realloc(m.rcpts, (m.nrcpts + 1) * sizeof *v)) ||
                       !((m.rcpts = v)[m.nrcpts] = strdup(p.addr))) {
                reply(out, "451 4.3.0 out of memory");
            } else {
                m.nrcpts++;
                st = BS_RCPT;
                reply(out, "250 2.1.5 Ok");
            }
        } else if (verb(line, "DATA")) {
            if (st != BS_RCPT) {
                reply(out,
                      st == BS_MAIL ? "554 5.5.1 no valid recipients" : "503 5.5.1 MAIL first");
                continue;
            }
            reply(out, "354 End data with <CR><LF>.<CR><LF>");
            bool too_long;
            if (read_data(in, &m, &too_long) < 0)
                break;
            if (too_long)
                reply(out, "500 5.5.6 a line of the message passes 1000 octets");
            else if (sm_prepare_message(&m, false, NULL) != SM_EX_OK)
                reply(out, "554 5.6.0 the message header cannot be read");
            else
                reply(out, data_reply(sm_deliver_or_keep(cfg, c, &m, "sendmail -bs")));
            reset(&m, &st);
        } else if (verb(line, "RSET")) {
            reset(&m, &st);
            reply(out, "250 2.0.0 Ok");
        } else if (verb(line, "NOOP")) {
            reply(out, "250 2.0.0 Ok");
        } else if (verb(line, "VRFY")) {
            reply(out, "252 2.5.2 cannot verify, send and see");
        } else if (verb(line, "QUIT")) {
            reply(out, "221 2.0.0 Bye");
            break;
        } else {
            reply(out, "502 5.5.2 command not recognised");
        }
    }
    free(line);
    sm_message_free(&m);
    return SM_EX_OK;
}
