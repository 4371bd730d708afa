/* What `sluice serve` tells the person who started it: where it listens,
 * where mail goes, which certificate a client must trust, who may send
 * without AUTH and how to add a credential. Plain lines on stderr, written
 * once the listeners are open; the JSON log carries the same facts. */
#include "cli/serve_banner.h"

#include "core/config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* An absolute form of path for the reader (the file may not exist yet). */
static const char *shown_path(const char *path, char *buf, size_t n)
{
    if (realpath(path, buf))
        return buf;
    if (path[0] == '/')
        return path;
    char cwd[PATH_MAX];
    if (!realpath(".", cwd))
        return path;
    if (snprintf(buf, n, "%.*s/%s", (int)(sizeof cwd / 2), cwd, path) >= (int)n)
        return path;
    return buf;
}

static const char *port_of(const char *listen)
{
    const char *c = strrchr(listen, ':');
    return c ? c + 1 : listen;
}

void serve_banner(FILE *out, const struct config *cfg, const char *config_path,
                  const char *relay_nets, const char *program)
{
    char a[PATH_MAX], b[PATH_MAX];
    bool capture = false, real = false;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        if (cfg->upstreams[i].capture)
            capture = true;
        else
            real = true;
    }
    fprintf(out, "sluice: serving (config: %s)\n",
            config_path ? shown_path(config_path, a, sizeof a) : "embedded defaults");
    if (*cfg->listen_submission)
        fprintf(out, "  submission, STARTTLS  %s\n", cfg->listen_submission);
    if (*cfg->listen_smtps)
        fprintf(out, "  submission, TLS       %s\n", cfg->listen_smtps);
    if (cfg->http_listen && *cfg->http_listen)
        fprintf(out, "  metrics and health    http://%s/metrics  /healthz  /readyz\n",
                cfg->http_listen);
    fprintf(out, "  certificate           %s\n", shown_path(cfg->tls_cert, a, sizeof a));
    fprintf(out, "                        (clients trust this file, e.g. swaks --tls-ca-path)\n");
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct config_upstream *u = &cfg->upstreams[i];
        if (u->capture)
            fprintf(out, "  upstream %-12s captured to %s/<queue-id>.eml (+ .json envelope)\n",
                    u->name, shown_path(cfg->capture_dir, b, sizeof b));
        else
            fprintf(out, "  upstream %-12s %s:%d\n", u->name, u->host ? u->host : "?", u->port);
    }
    if (capture && !real)
        fprintf(out, "  capture only          nothing leaves this machine\n");
    if (*relay_nets)
        fprintf(out, "  without AUTH          %s%s\n", relay_nets,
                strcmp(cfg->relay_networks, "auto") == 0 ? " (relay_networks = auto)" : "");
    else
        fprintf(out, "  without AUTH          nobody: every client authenticates\n");
    fprintf(out,
            "  add a credential      echo 'a long password' | %s creds add NAME --password%s%s\n",
            program, config_path ? " -c " : "",
            config_path ? shown_path(config_path, a, sizeof a) : "");
    if (*relay_nets && *cfg->listen_submission)
        fprintf(out,
                "  try it                swaks --server 127.0.0.1:%s --from app@example.com "
                "--to qa@example.net\n",
                port_of(cfg->listen_submission));
    fflush(out);
}
