/* `sluice sendmail` and the binary called as sendmail: the command line of
 * sendmail(1) as Postfix accepts it, the message from standard input,
 * recipients from the arguments and, with -t, from To/Cc/Bcc (Bcc removed),
 * then submission or the outbox (sendmail_outbox.c). Exit statuses are
 * sysexits.h values, as every caller of sendmail expects. */
#include "cli/cli.h"
#include "cli/sendmail.h"

#include "core/config.h"
#include "mail/address.h"
#include "mail/addrlist.h"
#include "mail/header_field.h"

#include <errno.h>
#include <stdarg.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define WHO "sendmail"

struct sm_opts {
    bool extract; /* -t */
    bool dot_ok;  /* -i / -oi: a lone "." does not end the message */
    bool smtp;    /* -bs */
    bool flush;   /* -q */
    bool list;    /* -bp */
    bool aliases; /* -bi: nothing to build, succeeds */
    bool verbose; /* -v */
    bool help;    /* --help */
    const char *from, *fullname, *config;
    char **rcpts; /* the arguments after the options */
    int nrcpts;
};

static const char usage_text[] =
    "usage: sendmail [-t] [-i|-oi] [-f SENDER] [-F NAME] [-bm|-bs|-bp|-bi] [-q] [-C CONFIG] "
    "[RECIPIENT...]\n"
    "Reads a message from standard input and submits it to Sluice ([sendmail] in the "
    "configuration; docs/SENDMAIL.md). Accepted and ignored as Postfix does: -B TYPE, -N DSN, "
    "-R RET, -V ENVID, -h N, -L LABEL, -X FILE, -XV, -U, -m, -n, -v, -Am, -Ac, -o7, -o8, -om, "
    "-odb, -odi, -oem, -oee, -oQ DIR and any other -oX.\n";

__attribute__((format(printf, 1, 2))) static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sendmail: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage_text);
    return SM_EX_USAGE;
}

static bool has_break(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* One option argument: the rest of the word or the next word. */
static const char *value(int argc, char **argv, int *i, const char *rest)
{
    if (*rest)
        return rest;
    return *i + 1 < argc ? argv[++*i] : NULL;
}

/* Options may stand before and after the recipients (as getopt lets
 * them); "--" ends them. o->rcpts is filled in place of argv's slots. */
static int parse_opts(int argc, char **argv, struct sm_opts *o)
{
    int i = 1;
    o->rcpts = argv + 1;
    o->nrcpts = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (has_break(a))
            return usage("argument %d holds a CR or LF: refused", i);
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (has_break(argv[i]))
                    return usage("argument %d holds a CR or LF: refused", i);
                o->rcpts[o->nrcpts++] = argv[i];
            }
            break;
        }
        if (strcmp(a, "--help") == 0) {
            o->help = true;
            return 0;
        }
        if (a[0] != '-' || a[1] == '\0') {
            /* argv[1 .. i) holds options and recipients; the slot of one
             * already read as an option is free to take this one */
            o->rcpts[o->nrcpts++] = argv[i];
            continue;
        }
        for (const char *p = a + 1; *p; p++) {
            const char *rest = p + 1, *v;
            switch (*p) {
            case 't':
                o->extract = true;
                continue;
            case 'i':
                o->dot_ok = true;
                continue;
            case 'v':
                o->verbose = true;
                continue;
            case 'U': /* initial submission: it always is */
            case 'm': /* me too: always */
            case 'n': /* no aliasing: there is none */
                continue;
            case 'f':
            case 'r':
            case 'F':
            case 'C':
                if (!(v = value(argc, argv, &i, rest)))
                    return usage("-%c needs a value", *p);
                if (has_break(v))
                    return usage("the value of -%c holds a CR or LF: refused", *p);
                if (*p == 'F')
                    o->fullname = v;
                else if (*p == 'C')
                    o->config = v;
                else
                    o->from = v;
                break;
            case 'B':
            case 'N':
            case 'R':
            case 'V':
            case 'h':
            case 'L':
                if (!value(argc, argv, &i, rest))
                    return usage("-%c needs a value", *p);
                break;
            case 'X': /* -XV (VERP) or -X LOGFILE: both ignored */
                if (strcmp(rest, "V") != 0 && !value(argc, argv, &i, rest))
                    return usage("-X needs a value");
                break;
            case 'A': /* -Am / -Ac: which submit file; there is none */
                break;
            case 'o':
                if (strcmp(rest, "i") == 0)
                    o->dot_ok = true;
                else if (strcmp(rest, "Q") == 0 && !value(argc, argv, &i, ""))
                    return usage("-oQ needs a value");
                break; /* -o7 -o8 -om -odb -odi -oem -oee -oQDIR ...: ignored */
            case 'q':
                o->flush = true; /* -q, -qR..., -qS..., -q1h: forward the outbox now */
                break;
            case 'b':
                if (strcmp(rest, "m") == 0)
                    ;
                else if (strcmp(rest, "s") == 0)
                    o->smtp = true;
                else if (strcmp(rest, "p") == 0)
                    o->list = true;
                else if (strcmp(rest, "i") == 0)
                    o->aliases = true;
                else
                    return usage("-b%s is not supported (-bm, -bs, -bp and -bi are)", rest);
                break;
            default:
                return usage("unknown option -%c", *p);
            }
            break; /* the option took the rest of the word */
        }
    }
    return 0;
}

static int add_rcpts(struct sm_message *m, const char *list, size_t len, const char *where)
{
    struct addrlist l;
    char err[512];
    if (addrlist_parse(list, len, &l, err, sizeof err) != 0) {
        fprintf(stderr, "sendmail: %s: %s\n", where, err);
        return -1;
    }
    for (size_t i = 0; i < l.n; i++) {
        bool dup = false;
        for (size_t k = 0; k < m->nrcpts && !dup; k++)
            dup = strcasecmp(m->rcpts[k], l.v[i].addr) == 0;
        if (dup)
            continue;
        char **v = realloc(m->rcpts, (m->nrcpts + 1) * sizeof *v);
        if (!v) {
            addrlist_free(&l);
            return -1;
        }
        m->rcpts = v;
        v[m->nrcpts++] = l.v[i].addr;
        l.v[i].addr = NULL;
    }
    addrlist_free(&l);
    return 0;
}

/* "Name:" at the start of line: RFC 5322 2.2 ftext up to the colon. */
static size_t field_name_len(const char *p, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)p[k];
        if (c == ':')
            return k;
        if (c < 33 || c > 126)
            return 0;
    }
    return 0;
}

/* Inserts the empty line at off: what follows is the body for every reader,
 * as Postfix does when a header ends without one. */
static int insert_blank_line(struct sm_message *m, size_t off)
{
    char *d = realloc(m->data, m->len + 3);
    if (!d)
        return -1;
    memmove(d + off + 2, d + off, m->len - off + 1);
    memcpy(d + off, "\r\n", 2);
    m->data = d;
    m->len += 2;
    return 0;
}

/* Walks the header block: recipients from To/Cc/Bcc with extract, every Bcc
 * field cut out, whether a From field is there. A line that is not a field
 * ends the header and gets the empty line before it. Returns 0 or -1. */
static int scan_header(struct sm_message *m, bool extract, bool *has_from)
{
    size_t i = 0;
    *has_from = false;
    while (i < m->len) {
        if (m->len - i >= 2 && memcmp(m->data + i, "\r\n", 2) == 0)
            return 0; /* the empty line ends the header */
        size_t start = i;
        const char *eol1 = memchr(m->data + i, '\n', m->len - i);
        size_t first = eol1 ? (size_t)(eol1 - m->data) - start : m->len - start;
        size_t nlen = field_name_len(m->data + start, first);
        if (nlen == 0)
            return insert_blank_line(m, start); /* not a field: the body starts here */
        /* the field: its first line and the folded lines after it */
        for (;;) {
            char *eol = memchr(m->data + i, '\n', m->len - i);
            i = eol ? (size_t)(eol - m->data) + 1 : m->len;
            if (i >= m->len || (m->data[i] != ' ' && m->data[i] != '\t'))
                break;
        }
        size_t colon = start + nlen;
        const char *name = m->data + start;
        bool bcc = nlen == 3 && strncasecmp(name, "Bcc", 3) == 0;
        bool to = nlen == 2 && (strncasecmp(name, "To", 2) == 0 || strncasecmp(name, "Cc", 2) == 0);
        if (nlen == 4 && strncasecmp(name, "From", 4) == 0)
            *has_from = true;
        if (extract && (bcc || to)) {
            char where[8];
            snprintf(where, sizeof where, "%.*s", (int)nlen, name);
            /* the value without its final CRLF */
            size_t vend = i >= 2 && m->data[i - 1] == '\n' ? i - 2 : i;
            if (add_rcpts(m, m->data + colon + 1, vend - colon - 1, where) < 0)
                return -1;
        }
        if (bcc) {
            memmove(m->data + start, m->data + i, m->len - i + 1);
            m->len -= i - start;
            i = start;
        }
    }
    return 0;
}

static int add_from(struct sm_message *m, const char *fullname)
{
    char value[1200], field[1400];
    if (fullname && *fullname) {
        size_t n = 0;
        value[n++] = '"';
        for (const char *p = fullname; *p && n < 1000; p++) {
            if (*p == '"' || *p == '\\')
                value[n++] = '\\';
            value[n++] = *p;
        }
        snprintf(value + n, sizeof value - n, "\" <%s>", m->from);
    } else {
        snprintf(value, sizeof value, "%s", *m->from ? m->from : "MAILER-DAEMON");
    }
    int f = header_field(field, sizeof field, "From", value);
    if (f < 0)
        return -1;
    char *d = malloc(m->len + (size_t)f + 1);
    if (!d)
        return -1;
    memcpy(d, field, (size_t)f);
    memcpy(d + f, m->data, m->len + 1);
    free(m->data);
    m->data = d;
    m->len += (size_t)f;
    return 0;
}

/* -f, else LOGIN@[server] hostname. */
static char *sender(const struct sm_opts *o, const struct config *cfg)
{
    const char *user = o->from;
    size_t n = user ? strlen(user) : 0;
    if (n >= 2 && user[0] == '<' && user[n - 1] == '>')
        return strndup(user + 1, n - 2); /* "<>": the null sender */
    if (!user) {
        struct passwd *pw = getpwuid(getuid());
        user = pw ? pw->pw_name : "nobody";
    }
    char *s = NULL;
    /* a bare login ("-f root") is completed with [server] hostname */
    if (strchr(user, '@') ? asprintf(&s, "%s", user) < 0
                          : asprintf(&s, "%s@%s", user, cfg->hostname) < 0)
        return NULL;
    return s;
}

static int list_outbox(const struct config *cfg)
{
    char dir[4096], err[512];
    if (sm_outbox_path(cfg, dir, sizeof dir, err, sizeof err) < 0) {
        fprintf(stderr, "sendmail: %s\n", err);
        return SM_EX_CANTCREAT;
    }
    return sm_outbox_list(dir, stdout) < 0 ? SM_EX_IOERR : SM_EX_OK;
}

int sm_flush_command(const struct config *cfg, const char *who)
{
    struct sm_submit_conf c;
    char err[1024], dir[4096];
    int rc = sm_submit_conf_load(&c, cfg, err, sizeof err);
    if (rc != SM_EX_OK) {
        fprintf(stderr, "%s: %s\n", who, err);
        return rc;
    }
    if (sm_outbox_path(cfg, dir, sizeof dir, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", who, err);
        sm_submit_conf_wipe(&c);
        return SM_EX_CANTCREAT;
    }
    int sent = 0, refused = 0, left = 0;
    int busy = sm_outbox_flush(dir, &c, &sent, &refused, &left, false);
    sm_submit_conf_wipe(&c);
    printf("outbox %s: %d sent, %d refused, %d waiting%s\n", dir, sent, refused, left,
           busy < 0 ? " (another flush is running)" : "");
    return left && busy == 0 ? SM_EX_TEMPFAIL : SM_EX_OK;
}

int sm_prepare_message(struct sm_message *m, bool extract, const char *fullname)
{
    bool has_from;
    if (scan_header(m, extract, &has_from) < 0)
        return SM_EX_DATAERR;
    if (!has_from && add_from(m, fullname) < 0) {
        fprintf(stderr, "sendmail: cannot write a From field for '%s'\n", m->from);
        return SM_EX_DATAERR;
    }
    return SM_EX_OK;
}

static int run(const struct sm_opts *o, const struct config *cfg)
{
    if (o->aliases)
        return SM_EX_OK;
    if (o->list)
        return list_outbox(cfg);
    if (o->flush)
        return sm_flush_command(cfg, WHO);
    struct sm_submit_conf c;
    char err[1024];
    int rc = sm_submit_conf_load(&c, cfg, err, sizeof err);
    if (rc != SM_EX_OK) {
        fprintf(stderr, "sendmail: %s\n", err);
        return rc;
    }
    struct sm_message m = {0};
    if (!(m.from = sender(o, cfg))) {
        sm_submit_conf_wipe(&c);
        return SM_EX_OSERR;
    }
    struct smtp_path path;
    if (*m.from && smtp_parse_mailbox(m.from, strlen(m.from), true, &path) != SMTP_ADDR_OK) {
        fprintf(stderr, "sendmail: sender '%s' is not an address (-f local@domain)\n", m.from);
        sm_message_free(&m);
        sm_submit_conf_wipe(&c);
        return SM_EX_USAGE;
    }
    if (o->smtp) {
        rc = sm_smtp_dialogue(cfg, &c, stdin, stdout);
        sm_message_free(&m);
        sm_submit_conf_wipe(&c);
        return rc;
    }
    for (int i = 0; i < o->nrcpts; i++)
        if (add_rcpts(&m, o->rcpts[i], strlen(o->rcpts[i]), "recipient") < 0) {
            rc = SM_EX_USAGE;
            goto out;
        }
    if (sm_read_message(stdin, !o->dot_ok, &m) < 0) {
        fprintf(stderr, "sendmail: reading the message: %s\n", strerror(errno));
        rc = SM_EX_IOERR;
        goto out;
    }
    if ((rc = sm_prepare_message(&m, o->extract, o->fullname)) != SM_EX_OK)
        goto out;
    if (m.nrcpts == 0) {
        fprintf(stderr, "sendmail: no recipients (give them as arguments, or use -t with To, "
                        "Cc or Bcc fields)\n");
        rc = SM_EX_USAGE;
        goto out;
    }
    rc = sm_deliver_or_keep(cfg, &c, &m, WHO);
out:
    sm_message_free(&m);
    sm_submit_conf_wipe(&c);
    return rc;
}

/* The configuration sendmail reads: -C, then what main.c found (-c,
 * SLUICE_CONFIG), then /etc/sluice/sluice.conf when it exists. */
int cli_sendmail(const struct cli *cli, int argc, char **argv)
{
    struct sm_opts o = {0};
    if (cli->help) {
        printf("%s", usage_text);
        return SM_EX_OK;
    }
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc;
    if (o.help) {
        printf("%s", usage_text);
        return SM_EX_OK;
    }
    struct cli c2 = *cli;
    c2.verb = "sendmail";
    if (o.config)
        c2.config_path = o.config;
    else if (!c2.config_path && access(SM_SYSTEM_CONFIG, F_OK) == 0)
        c2.config_path = SM_SYSTEM_CONFIG;
    struct config *cfg = cli_load_config(&c2);
    if (!cfg)
        return SM_EX_CONFIG;
    rc = run(&o, cfg);
    config_free(cfg);
    return rc;
}
