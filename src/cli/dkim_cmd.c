/* `sluice dkim keygen|sign`: the operator's side of DKIM signing. keygen
 * makes a key pair and prints the TXT record to publish; sign signs a message
 * on stdin the way intake does. `sluice verify` is in dkim_verify_cmd.c. */
#include "cli/cli.h"
#include "cli/dkim_cmd_int.h"
#include "core/config.h"
#include "core/privdrop.h"
#include "mailauth/dkim.h"

#include <stdbool.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define DEFAULT_RSA_BITS 2048 /* RFC 8301 3.2: signers SHOULD use at least 2048 */
#define TXT_STRING_MAX 255    /* RFC 1035 3.3.14: one character-string */

/* Turns bare LF into CRLF (message files on disk often use LF); malloc'd. */
char *dkim_cmd_to_crlf(const char *in, size_t len, size_t *out_len)
{
    char *out = malloc(len * 2 + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            out[o++] = '\r';
        out[o++] = in[i];
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return (mkdir(tmp, 0700) < 0 && errno != EEXIST) ? -1 : 0;
}

/* ---- dkim keygen ------------------------------------------------------------- */

static const char keygen_usage[] =
    "usage: sluice dkim keygen --domain DOMAIN --selector SELECTOR\n"
    "           [--algorithm rsa|ed25519] [--bits 2048] [--out DIR] [--init] [--json]\n"
    "Writes DIR/SELECTOR._domainkey.DOMAIN.key (mode 0600) and prints the DNS TXT\n"
    "record to publish. DIR defaults to the configured [dkim] key_dir (the daemon\n"
    "signs with the keys there); the folder holding it must exist unless --init.\n";

static int cmd_keygen(const struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"domain", required_argument, NULL, 'd'},
                                         {"selector", required_argument, NULL, 's'},
                                         {"algorithm", required_argument, NULL, 'a'},
                                         {"bits", required_argument, NULL, 'b'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"init", no_argument, NULL, 'i'},
                                         {NULL, 0, NULL, 0}};
    const char *domain = NULL, *selector = NULL, *dir = NULL;
    enum dkim_algorithm alg = DKIM_ALG_RSA_SHA256;
    unsigned long bits = DEFAULT_RSA_BITS;
    bool json = cli->json, init = false;
    int c;
    if (cli->help)
        return cli_help(keygen_usage);
    char *end;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            domain = optarg;
            break;
        case 's':
            selector = optarg;
            break;
        case 'a':
            if (dkim_algorithm_parse(optarg, &alg) < 0)
                return cli_fail(cli, CLI_ERR_INVALID, "keygen: --algorithm must be rsa or ed25519");
            break;
        case 'b':
            bits = strtoul(optarg, &end, 10);
            if (*end || bits < DKIM_MIN_RSA_BITS || bits > 8192)
                return cli_fail(cli, CLI_ERR_INVALID,
                                "keygen: --bits must be 1024..8192 (2048 advised)");
            break;
        case 'o':
            dir = optarg;
            break;
        case 'i':
            init = true;
            break;
        default:
            return cli_usage_error(cli, keygen_usage, NULL);
        }
    }
    if (optind < argc)
        return cli_usage_error(cli, keygen_usage, "unexpected argument '%s'", argv[optind]);
    if (!domain || !selector)
        return cli_usage_error(cli, keygen_usage, "keygen needs --domain and --selector");
    if (!dkim_valid_domain(domain, strlen(domain)) ||
        !dkim_valid_domain(selector, strlen(selector)))
        return cli_fail(cli, CLI_ERR_INVALID,
                        "keygen: domain and selector must be DNS names "
                        "(letters, digits, '-', dots)");
    struct config *cfg = NULL;
    int rc;
    if (!dir) {
        if (!(cfg = cli_load_config(cli)))
            return CLI_EXIT_FAILURE;
        dir = cfg->dkim_key_dir;
        /* key_dir itself may be new (serve does not make it), but not the
         * folder it lives in: that would be a var_dir no daemon uses */
        struct stat st;
        char parent[4096];
        snprintf(parent, sizeof parent, "%s", dir);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = '\0';
        else
            snprintf(parent, sizeof parent, "%s", slash ? "/" : ".");
        if (!init && stat(dir, &st) < 0 && stat(parent, &st) < 0) {
            rc = cli_fail(cli, CLI_ERR_NEEDS_INIT,
                          "keygen: no folder %s for the DKIM key folder %s (configuration: %s); "
                          "point -c FILE or SLUICE_CONFIG at the daemon's configuration, or pass "
                          "--init to create it there",
                          parent, dir, cli_config_origin(cli));
            config_free(cfg);
            return rc;
        }
    }
    char path[4096], *pem = NULL, *rec = NULL, err[256];
    rc = CLI_EXIT_FAILURE;
    if (snprintf(path, sizeof(path), "%s/%s._domainkey.%s.key", dir, selector, domain) >=
        (int)sizeof(path)) {
        rc = cli_fail(cli, CLI_ERR_INVALID, "keygen: output path too long");
        goto out;
    }
    if (access(path, F_OK) == 0) {
        rc = cli_fail(cli, CLI_ERR_EXISTS,
                      "keygen: %s exists; refusing to overwrite it (pick a new selector to "
                      "rotate keys)",
                      path);
        goto out;
    }
    char gerr[512];
    if (mkdir_p(dir) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "keygen: cannot create %s: %s", dir, strerror(errno));
        goto out;
    }
    if (privdrop_give_like_folder(dir, gerr, sizeof gerr) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "keygen: %s", gerr);
        goto out;
    }
    if (dkim_keygen(alg, (unsigned)bits, &pem, &rec, err, sizeof(err)) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "keygen: %s", err);
        goto out;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "keygen: cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    size_t pl = strlen(pem);
    if (write(fd, pem, pl) != (ssize_t)pl || fsync(fd) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "keygen: cannot write %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        goto out;
    }
    close(fd);
    /* a daemon that left root reads the key on SIGHUP */
    if (privdrop_give_like_folder(path, gerr, sizeof gerr) < 0) {
        rc = cli_fail(cli, CLI_ERR_IO, "keygen: %s", gerr);
        unlink(path);
        goto out;
    }

    char name[600];
    snprintf(name, sizeof(name), "%s._domainkey.%s.", selector, domain);
    size_t rl = strlen(rec);
    if (json) {
        json_t *strings = json_array();
        for (size_t i = 0; i < rl; i += TXT_STRING_MAX)
            json_array_append_new(
                strings, json_stringn(rec + i, rl - i < TXT_STRING_MAX ? rl - i : TXT_STRING_MAX));
        json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:s}", "name", name, "value", rec, "strings",
                              strings, "key_file", path, "algorithm", dkim_algorithm_name(alg));
        char *text = json_dumps(o, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(o);
    } else {
        printf("; DKIM key for %s, selector %s (%s); private key in %s\n", domain, selector,
               dkim_algorithm_name(alg), path);
        printf("%s IN TXT (", name);
        for (size_t i = 0; i < rl; i += TXT_STRING_MAX) {
            size_t n = rl - i < TXT_STRING_MAX ? rl - i : TXT_STRING_MAX;
            printf("%s\"%.*s\"", i ? "\n        " : " ", (int)n, rec + i);
        }
        printf(" )\n");
    }
    rc = CLI_EXIT_OK;
out:
    free(pem);
    free(rec);
    config_free(cfg);
    return rc;
}

/* ---- dkim sign --------------------------------------------------------------- */

static const char sign_usage[] =
    "usage: sluice dkim sign --key FILE --domain DOMAIN --selector SELECTOR\n"
    "           [--algorithm rsa-sha256|ed25519-sha256] [--canon relaxed/relaxed]\n"
    "           [--headers From:To:...] [--oversign From:...] [--identity @DOMAIN]\n"
    "           [--expire SECONDS] [--timestamp UNIXTIME] [--json] < message > signed\n"
    "Signs the message on standard input like intake does and writes it with its\n"
    "DKIM-Signature field prepended; --json prints {\"dkim_signature\": FIELD} instead.\n";

static int cmd_sign(const struct cli *cli, int argc, char **argv)
{
    if (cli->help)
        return cli_help(sign_usage);
    static const struct option opts[] = {{"key", required_argument, NULL, 'k'},
                                         {"domain", required_argument, NULL, 'd'},
                                         {"selector", required_argument, NULL, 's'},
                                         {"algorithm", required_argument, NULL, 'a'},
                                         {"canon", required_argument, NULL, 'c'},
                                         {"headers", required_argument, NULL, 'H'},
                                         {"oversign", required_argument, NULL, 'O'},
                                         {"identity", required_argument, NULL, 'i'},
                                         {"expire", required_argument, NULL, 'x'},
                                         {"timestamp", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    struct dkim_sign_opts o = {0};
    time_t now = time(NULL);
    int c;
    char *end;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            o.key_file = optarg;
            break;
        case 'd':
            o.domain = optarg;
            break;
        case 's':
            o.selector = optarg;
            break;
        case 'a':
            o.algorithm = optarg;
            break;
        case 'c':
            o.canon = optarg;
            break;
        case 'H':
            o.headers = optarg;
            break;
        case 'O':
            o.oversign = optarg;
            break;
        case 'i':
            o.identity = optarg;
            break;
        case 'x':
            o.expire_seconds = strtol(optarg, &end, 10);
            if (*end || o.expire_seconds <= 0)
                return cli_fail(cli, CLI_ERR_INVALID,
                                "sign: --expire takes a positive number of seconds");
            break;
        case 't':
            now = (time_t)strtoll(optarg, &end, 10);
            if (*end || now < 0)
                return cli_fail(cli, CLI_ERR_INVALID, "sign: --timestamp takes a Unix time");
            break;
        default:
            return cli_usage_error(cli, sign_usage, NULL);
        }
    }
    if (optind < argc)
        return cli_usage_error(cli, sign_usage, "unexpected argument '%s'", argv[optind]);
    if (!o.key_file || !o.domain || !o.selector)
        return cli_usage_error(cli, sign_usage, "sign needs --key, --domain and --selector");
    char err[256];
    struct dkim_signer *s = dkim_signer_new(&o, err, sizeof(err));
    if (!s)
        return cli_fail(cli, CLI_ERR_INVALID, "sign: %s", err);
    size_t len, clen;
    char *in = cli_read_all("-", MAX_MESSAGE, &len), *msg = NULL, *sig = NULL;
    int rc = CLI_EXIT_FAILURE;
    if (!in || !(msg = dkim_cmd_to_crlf(in, len, &clen))) {
        cli_fail(cli, CLI_ERR_IO, "sign: cannot read the message: %s", strerror(errno));
        goto out;
    }
    int r = dkim_sign_message(s, msg, clen, now, &sig);
    if (r < 0) {
        rc = cli_fail(cli, CLI_ERR_INVALID, "sign: %s", dkim_strerror(r));
        goto out;
    }
    if (cli->json) {
        json_t *j = json_pack("{s:s}", "dkim_signature", sig);
        char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        if (text)
            puts(text);
        free(text);
        json_decref(j);
    } else if (!memchr(in, '\r', len)) {
        /* keep the input's line ends: a file with LF only gets LF back */
        for (const char *p = sig; *p; p++)
            if (*p != '\r')
                putchar(*p);
        fwrite(in, 1, len, stdout);
    } else {
        fputs(sig, stdout);
        fwrite(msg, 1, clen, stdout);
    }
    rc = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
out:
    free(in);
    free(msg);
    free(sig);
    dkim_signer_free(s);
    return rc;
}

int cli_dkim(const struct cli *cli, int argc, char **argv)
{
    static const char usage[] =
        "usage: sluice dkim keygen|sign [options]   (--help on each for details)\n";
    if (argc >= 2 && !strcmp(argv[1], "keygen"))
        return cmd_keygen(cli, argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "sign"))
        return cmd_sign(cli, argc - 1, argv + 1);
    if (cli->help || (argc == 2 && !strcmp(argv[1], "help")))
        return cli_help(usage);
    return cli_usage_error(cli, usage, argc >= 2 ? "unknown dkim command '%s'" : "%s",
                           argc >= 2 ? argv[1] : "which dkim command?");
}
