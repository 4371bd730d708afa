/* `sluice send`: a message from command-line parts, built by the composer
 * (mail/compose.c) and submitted like sendmail does (sendmail_submit.c,
 * the outbox when the relay cannot take it); --dry-run prints it instead.
 * Also `sluice outbox flush|list`. */
#include "cli/cli.h"
#include "cli/sendmail.h"

#include "core/config.h"
#include "mail/compose.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bodies and attachments are read whole; the relay refuses bigger anyway. */
#define SEND_FILE_MAX (50L * 1024 * 1024)
#define SEND_LIST_MAX 100

static const char send_usage[] =
    "usage: sluice send --from ADDR --to ADDR [--to ADDR...] [--cc ADDR] [--bcc ADDR]\n"
    "                   [--reply-to ADDR] [--subject TEXT] [--text TEXT | --text-file FILE]\n"
    "                   [--html HTML | --html-file FILE] [--attach FILE[=TYPE]...]\n"
    "                   [--inline FILE=CONTENT-ID...] [--header 'Name: value'...] [--dry-run]\n"
    "ADDR is 'local@domain' or 'Name <local@domain>'; '-' as FILE is standard input.\n"
    "Exit 0: sent, or kept in the outbox; 1: refused or failed; 2: bad arguments.\n";

struct send_args {
    const char *to[SEND_LIST_MAX], *cc[SEND_LIST_MAX], *bcc[SEND_LIST_MAX];
    size_t nto, ncc, nbcc;
    struct compose_attachment att[SEND_LIST_MAX];
    size_t natt;
    struct compose_header hdr[SEND_LIST_MAX];
    char *hdr_copy[SEND_LIST_MAX];
    size_t nhdr;
    char *owned[3 * SEND_LIST_MAX]; /* file contents and names to free */
    size_t nowned;
};

static char *keep(struct send_args *a, char *p)
{
    if (p && a->nowned < sizeof a->owned / sizeof a->owned[0])
        a->owned[a->nowned++] = p;
    return p;
}

static int add_list(const struct cli *cli, const char **v, size_t *n, const char *what,
                    const char *val)
{
    if (*n >= SEND_LIST_MAX)
        return cli_usage_error(cli, send_usage, "more than %d %s", SEND_LIST_MAX, what);
    v[(*n)++] = val;
    return 0;
}

/* FILE or FILE=VALUE: the attachment read whole. */
static int add_file(const struct cli *cli, struct send_args *a, const char *arg, bool inline_part)
{
    if (a->natt >= SEND_LIST_MAX)
        return cli_usage_error(cli, send_usage, "more than %d attachments", SEND_LIST_MAX);
    char *spec = keep(a, strdup(arg));
    if (!spec)
        return cli_fail(cli, CLI_ERR_IO, "out of memory");
    char *eq = strrchr(spec, '=');
    if (inline_part && !eq)
        return cli_usage_error(cli, send_usage, "--inline needs FILE=CONTENT-ID ('%s')", arg);
    if (eq)
        *eq++ = '\0';
    size_t len = 0;
    char *data = keep(a, cli_read_all(spec, SEND_FILE_MAX, &len));
    if (!data)
        return cli_fail(cli, CLI_ERR_IO, "%s: %s", spec, strerror(errno));
    char *base = keep(a, strdup(spec));
    if (!base)
        return cli_fail(cli, CLI_ERR_IO, "out of memory");
    struct compose_attachment *t = &a->att[a->natt++];
    *t = (struct compose_attachment){.filename = basename(base), .data = data, .len = len};
    if (inline_part)
        t->content_id = eq;
    else
        t->content_type = eq;
    return 0;
}

static int add_header(const struct cli *cli, struct send_args *a, const char *arg)
{
    if (a->nhdr >= SEND_LIST_MAX)
        return cli_usage_error(cli, send_usage, "more than %d headers", SEND_LIST_MAX);
    char *copy = keep(a, strdup(arg));
    if (!copy)
        return cli_fail(cli, CLI_ERR_IO, "out of memory");
    char *colon = strchr(copy, ':');
    if (!colon)
        return cli_usage_error(cli, send_usage, "--header '%s': expected 'Name: value'", arg);
    *colon = '\0';
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    a->hdr[a->nhdr++] = (struct compose_header){copy, v};
    return 0;
}

static const char *body(const struct cli *cli, struct send_args *a, const char *file, int *rc)
{
    size_t len = 0;
    char *s = keep(a, cli_read_all(file, SEND_FILE_MAX, &len));
    if (!s)
        *rc = cli_fail(cli, CLI_ERR_IO, "%s: %s", file, strerror(errno));
    else if (strlen(s) != len)
        *rc = cli_usage_error(cli, NULL, "%s holds a NUL octet: not text", file);
    return s;
}

static int to_cli_status(int sysexit)
{
    return sysexit == SM_EX_OK      ? CLI_EXIT_OK
           : sysexit == SM_EX_USAGE ? CLI_EXIT_USAGE
                                    : CLI_EXIT_FAILURE;
}

static int submit(const struct cli *cli, const struct compose_msg *m, char *data, size_t len)
{
    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    char err[1024], from[512];
    struct sm_submit_conf c;
    struct sm_message msg = {.data = data, .len = len};
    int rc = sm_submit_conf_load(&c, cfg, err, sizeof err);
    if (rc != SM_EX_OK) {
        rc = cli_fail(cli, CLI_ERR_CONFIG, "%s", err);
        goto out;
    }
    if (compose_sender(m, from, sizeof from, err, sizeof err) != COMPOSE_OK ||
        compose_recipients(m, &msg.rcpts, &msg.nrcpts, err, sizeof err) != COMPOSE_OK) {
        rc = cli_fail(cli, CLI_ERR_INVALID, "%s", err);
        goto out;
    }
    msg.from = from;
    rc = to_cli_status(sm_deliver_or_keep(cfg, &c, &msg, "sluice send"));
    compose_recipients_free(msg.rcpts, msg.nrcpts);
out:
    sm_submit_conf_wipe(&c);
    config_free(cfg);
    return rc;
}

/* Line breaks belong in a body given inline, and nowhere else. */
static bool body_argument(int argc, char **argv, int i)
{
    (void)argc;
    return strncmp(argv[i], "--text=", 7) == 0 || strncmp(argv[i], "--html=", 7) == 0 ||
           (i > 1 && (strcmp(argv[i - 1], "--text") == 0 || strcmp(argv[i - 1], "--html") == 0));
}

int cli_send(const struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"cc", required_argument, NULL, 'c'},
        {"bcc", required_argument, NULL, 'b'},
        {"reply-to", required_argument, NULL, 'r'},
        {"subject", required_argument, NULL, 's'},
        {"text", required_argument, NULL, 'x'},
        {"text-file", required_argument, NULL, 'X'},
        {"html", required_argument, NULL, 'h'},
        {"html-file", required_argument, NULL, 'H'},
        {"attach", required_argument, NULL, 'a'},
        {"inline", required_argument, NULL, 'i'},
        {"header", required_argument, NULL, 'e'},
        {"dry-run", no_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    if (cli->help)
        return cli_help(send_usage);
    /* a CR or LF anywhere could become a header of its own: refuse first */
    for (int i = 1; i < argc; i++)
        if (strpbrk(argv[i], "\r\n") && !body_argument(argc, argv, i))
            return cli_usage_error(cli, send_usage,
                                   "argument %d holds a CR or LF: refused (it could inject "
                                   "header fields)",
                                   i);
    struct send_args *a = calloc(1, sizeof *a);
    if (!a)
        return cli_fail(cli, CLI_ERR_IO, "out of memory");
    struct compose_msg m = {0};
    bool dry = false;
    int c, rc = 0;
    optind = 0;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            m.from = optarg;
            break;
        case 't':
            rc = add_list(cli, a->to, &a->nto, "--to", optarg);
            break;
        case 'c':
            rc = add_list(cli, a->cc, &a->ncc, "--cc", optarg);
            break;
        case 'b':
            rc = add_list(cli, a->bcc, &a->nbcc, "--bcc", optarg);
            break;
        case 'r':
            m.reply_to = optarg;
            break;
        case 's':
            m.subject = optarg;
            break;
        case 'x':
            m.text = optarg;
            break;
        case 'X':
            m.text = body(cli, a, optarg, &rc);
            break;
        case 'h':
            m.html = optarg;
            break;
        case 'H':
            m.html = body(cli, a, optarg, &rc);
            break;
        case 'a':
            rc = add_file(cli, a, optarg, false);
            break;
        case 'i':
            rc = add_file(cli, a, optarg, true);
            break;
        case 'e':
            rc = add_header(cli, a, optarg);
            break;
        case 'n':
            dry = true;
            break;
        default:
            rc = cli_usage_error(cli, send_usage, "unknown option or missing value: '%s'",
                                 argv[optind - 1]);
        }
    }
    if (rc == 0 && optind < argc)
        rc = cli_usage_error(cli, send_usage, "unexpected argument '%s'", argv[optind]);
    if (rc == 0 && !m.from)
        rc = cli_usage_error(cli, send_usage, "--from is required");
    if (rc == 0 && a->nto + a->ncc + a->nbcc == 0)
        rc = cli_usage_error(cli, send_usage, "no recipient: give --to, --cc or --bcc");
    if (rc == 0) {
        m.to = a->to;
        m.nto = a->nto;
        m.cc = a->cc;
        m.ncc = a->ncc;
        m.bcc = a->bcc;
        m.nbcc = a->nbcc;
        m.attachments = a->att;
        m.nattachments = a->natt;
        m.headers = a->hdr;
        m.nheaders = a->nhdr;
        char *out = NULL, err[1024];
        size_t len = 0;
        int b = compose_build(&m, &out, &len, err, sizeof err);
        if (b == COMPOSE_EINVAL)
            rc = cli_usage_error(cli, NULL, "%s", err);
        else if (b != COMPOSE_OK)
            rc = cli_fail(cli, CLI_ERR_IO, "%s", err);
        else if (dry)
            rc = fwrite(out, 1, len, stdout) == len ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
        else
            rc = submit(cli, &m, out, len);
        free(out);
    }
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    free(a);
    return rc;
}

int cli_outbox(const struct cli *cli, int argc, char **argv)
{
    static const char usage[] = "usage: sluice outbox flush | list\n"
                                "flush: forward the messages waiting in the sendmail outbox\n"
                                "list: show them\n";
    if (cli->help)
        return cli_help(usage);
    if (argc != 2 || (strcmp(argv[1], "flush") != 0 && strcmp(argv[1], "list") != 0))
        return cli_usage_error(cli, usage, argc < 2 ? "flush or list?" : "unexpected '%s'",
                               argv[argc < 2 ? 0 : 1]);
    struct config *cfg = cli_load_config(cli);
    if (!cfg)
        return CLI_EXIT_FAILURE;
    int rc;
    if (strcmp(argv[1], "flush") == 0) {
        rc = sm_flush_command(cfg, "sluice outbox");
        rc = rc == SM_EX_OK ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    } else {
        char dir[4096], err[512];
        rc = sm_outbox_path(cfg, dir, sizeof dir, err, sizeof err) < 0
                 ? cli_fail(cli, CLI_ERR_IO, "%s", err)
                 : (sm_outbox_list(dir, stdout) < 0 ? CLI_EXIT_FAILURE : CLI_EXIT_OK);
    }
    config_free(cfg);
    return rc;
}
