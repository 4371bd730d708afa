/* `sluice serve`: wires the parts together, runs the event loop, and handles
 * SIGTERM (drain, then exit), SIGINT (same) and SIGHUP (reload). */
#include "cli/cli.h"
#include "cli/observe.h"
#include "cli/serve_banner.h"

#include "core/config.h"
#include "core/events.h"
#include "http/metrics.h"
#include "httpd/api.h"
#include "core/log.h"
#include "core/privdrop.h"
#include "core/relay.h"
#include "core/secrets.h"
#include "core/worker.h"
#include "deliver/deliver.h"
#include "net/cidr.h"
#include "net/listener.h"
#include "net/tls.h"
#include "net/tls_offload.h"
#include "policy/policy.h"
#include "policy/users.h"
#include "queue/control.h"
#include "queue/queue.h"
#include "smtp/session.h"
#include "intake/signing.h"
#include "spool/spool.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

struct serve {
    struct relay r;
    struct event *sig_term, *sig_int, *sig_hup, *compact_timer, *drain_timer;
    int64_t drain_deadline;
    const char *config_path;
    int lock_fd; /* var_dir/sluice.lock, flock'ed while the daemon lives */
};

static void print_config_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++) {
        const struct config_error *e = &errs->v[i];
        if (e->file && e->line)
            fprintf(stderr, "%s:%d: %s\n", e->file, e->line, e->message);
        else if (e->file)
            fprintf(stderr, "%s: %s\n", e->file, e->message);
        else
            fprintf(stderr, "config: %s\n", e->message);
    }
}

static bool under_dir(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && path[n] == '/';
}

static SSL_CTX *load_tls(const struct config *cfg)
{
    char err[512];
    if (under_dir(cfg->tls_cert, cfg->var_dir) && under_dir(cfg->tls_key, cfg->var_dir) &&
        tls_ensure_self_signed(cfg->tls_cert, cfg->tls_key, cfg->hostname, err, sizeof err) < 0) {
        log_event(LOG_ERROR, "tls.selfsigned_failed", "error", "%s", err, NULL);
        return NULL;
    }
    SSL_CTX *ctx = tls_server_ctx_new(cfg, err, sizeof err);
    if (!ctx)
        log_event(LOG_ERROR, "tls.config_failed", "error", "%s", err, NULL);
    return ctx;
}

/* Every upstream writes to capture_dir: nothing can leave the machine. */
static bool capture_only(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (!cfg->upstreams[i].capture)
            return false;
    return true;
}

/* relay_networks = auto: loopback may send without AUTH while the relay is
 * a local mail catcher; as soon as a real upstream exists, nobody may. */
static const char *relay_networks_in_force(const struct config *cfg)
{
    if (strcmp(cfg->relay_networks, "auto") != 0)
        return cfg->relay_networks;
    return capture_only(cfg) ? "127.0.0.0/8,::1/128" : "";
}

static struct cidr_list *load_nets(const struct config *cfg)
{
    struct cidr_list *l = calloc(1, sizeof *l);
    const char *bad = NULL;
    if (l && cidr_list_parse(relay_networks_in_force(cfg), l, &bad) < 0) {
        log_event(LOG_ERROR, "config.bad_relay_networks", "at", "%s", bad ? bad : "", NULL);
        free(l);
        return NULL;
    }
    return l;
}

static void on_message_durable(struct relay *r, uint64_t id)
{
    queue_add(r->queue, id);
}

static void on_upstream_recovered(struct relay *r)
{
    if (r->queue)
        queue_upstream_recovered(r->queue);
}

static void on_compact(evutil_socket_t fd, short what, void *arg)
{
    struct serve *sv = arg;
    (void)fd;
    (void)what;
    spool_compact(sv->r.spool);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct serve *sv = arg;
    struct relay *r = &sv->r;
    (void)fd;
    (void)what;
    if (r->sessions == 0 && queue_inflight(r->queue) == 0) {
        event_base_loopexit(r->base, NULL);
        return;
    }
    if (time(NULL) >= sv->drain_deadline) {
        log_event(LOG_WARN, "server.grace_expired", "sessions", "#%u", r->sessions, "deliveries",
                  "#%zu", queue_inflight(r->queue), NULL);
        session_close_all(r);
        event_base_loopexit(r->base, NULL);
    }
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
    struct serve *sv = arg;
    struct relay *r = &sv->r;
    (void)what;
    if (r->draining)
        return;
    log_event(LOG_INFO, "server.stopping", "signal", "%s", sig == SIGTERM ? "TERM" : "INT",
              "sessions", "#%u", r->sessions, "grace", "#%d", r->cfg->shutdown_grace, NULL);
    r->draining = true;
    listeners_stop(r->listeners);
    control_stop(r->control);
    session_drain_all(r);
    queue_quiesce(r->queue);
    sv->drain_deadline = time(NULL) + r->cfg->shutdown_grace;
    struct timeval tv = {0, 50000};
    sv->drain_timer = event_new(r->base, -1, EV_PERSIST, on_drain_tick, sv);
    event_add(sv->drain_timer, &tv);
    on_drain_tick(-1, 0, sv);
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    struct serve *sv = arg;
    struct relay *r = &sv->r;
    (void)sig;
    (void)what;
    struct config *cfg = NULL;
    struct config_errors errs = {0};
    if (config_load(sv->config_path, environ, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++)
            log_event(LOG_ERROR, "config.error", "file", "%s", errs.v[i].file ? errs.v[i].file : "",
                      "line", "#%d", errs.v[i].line, "message", "%s", errs.v[i].message, NULL);
        log_event(LOG_ERROR, "server.reload_failed", "reason", "%s",
                  "configuration has errors; keeping the running one", NULL);
        config_errors_free(&errs);
        config_free(cfg);
        return;
    }
    config_errors_free(&errs);
    if (secrets_check_files(cfg, &errs) > 0) {
        for (size_t i = 0; i < errs.n; i++)
            log_event(LOG_ERROR, "config.error", "message", "%s", errs.v[i].message, NULL);
        log_event(LOG_ERROR, "server.reload_failed", "reason", "%s",
                  "a secret or key file is open to group or others; keeping the running one", NULL);
        config_errors_free(&errs);
        config_free(cfg);
        return;
    }
    env_secrets_take(r->env_secrets, cfg);
    SSL_CTX *ctx = load_tls(cfg);
    char err[512];
    struct users *users = users_load(cfg->users_file, err, sizeof err);
    struct cidr_list *nets = load_nets(cfg);
    char serr[512] = "";
    struct signing *signing = signing_load(cfg, serr, sizeof serr);
    if (!signing)
        log_event(LOG_ERROR, "dkim.load_failed", "error", "%s", serr, NULL);
    if (!ctx || !users || !nets || !signing) {
        signing_free(signing);
        if (!users)
            log_event(LOG_ERROR, "users.load_failed", "error", "%s", err, NULL);
        log_event(
            LOG_ERROR, "server.reload_failed", "reason", "%s",
            "TLS, users, DKIM keys or relay networks failed to load; keeping the running ones",
            NULL);
        SSL_CTX_free(ctx);
        users_free(users);
        if (nets)
            cidr_list_free(nets);
        free(nets);
        config_free(cfg);
        return;
    }
    if (strcmp(cfg->listen_submission, r->cfg->listen_submission) != 0 ||
        strcmp(cfg->listen_smtps, r->cfg->listen_smtps) != 0)
        log_event(LOG_WARN, "server.reload_listen_unchanged", "reason", "%s",
                  "listen addresses change only on restart", NULL);
    SSL_CTX_free(r->tls);
    r->tls = ctx;
    users_free(r->users);
    r->users = users;
    cidr_list_free(r->relay_nets);
    free(r->relay_nets);
    r->relay_nets = nets;
    signing_free(r->signing);
    r->signing = signing;
    struct config *old = r->cfg;
    r->cfg = cfg;
    policy_reload(r);
    if (deliver_reload(r->deliver, err, sizeof err) < 0)
        log_event(LOG_ERROR, "deliver.reload_failed", "error", "%s", err, NULL);
    config_free(old);
    events_admin(r, "server.reload", sv->config_path ? sv->config_path : "embedded defaults");
    log_event(LOG_INFO, "server.reloaded", "users", "#%zu", users_count(users), "upstreams", "#%zu",
              cfg->n_upstreams, NULL);
    /* fixed upstream settings deserve a prompt retry, held mail included */
    queue_release_auto(r->queue);
    queue_flush(r->queue);
}

static const char serve_usage[] =
    "usage: sluice serve [-c CONFIG] [--json]\n"
    "Runs the relay. Without a config file it uses the embedded defaults:\n"
    "submission on 127.0.0.1:2525 (STARTTLS) and 127.0.0.1:4650 (TLS),\n"
    "spool under ./var/, and the capture upstream (./var/capture/).\n"
    "It creates var_dir and the stores it needs, and holds var_dir/sluice.lock\n"
    "so that a second daemon on the same var_dir refuses to start.\n";

/* One daemon per var_dir: two would share a spool and a credential store
 * that each believes it owns. The lock lives as long as the process (the
 * descriptor is never closed before exit) and holds the owner's PID. */
static int lock_var_dir(const struct cli *cli, const char *var_dir, int *fd_out)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/sluice.lock", var_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return cli_fail(cli, CLI_ERR_IO, "cannot open the lock file %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\r\n")] = '\0';
        close(fd);
        if (e != EWOULDBLOCK)
            return cli_fail(cli, CLI_ERR_IO, "cannot lock %s: %s", path, strerror(e));
        return cli_fail(cli, CLI_ERR_LOCKED,
                        "another sluice serve (pid %s) holds the lock %s on var_dir %s; stop it "
                        "or give this one another var_dir",
                        pid[0] ? pid : "unknown", path, var_dir);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        int e = errno;
        close(fd);
        return cli_fail(cli, CLI_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    *fd_out = fd;
    return CLI_EXIT_OK;
}

int cli_serve(const struct cli *cli, int argc, char **argv)
{
    if (cli->help)
        return cli_help(serve_usage);
    if (argc > 1)
        return cli_usage_error(cli, serve_usage, "%s '%s'",
                               argv[1][0] == '-' ? "unknown option" : "unexpected argument",
                               argv[1]);
    struct serve sv = {.lock_fd = -1};
    struct relay *r = &sv.r;
    sv.config_path = cli->config_path;
    struct config_errors errs = {0};
    if (config_load(sv.config_path, environ, &r->cfg, &errs) < 0) {
        print_config_errors(&errs);
        config_errors_free(&errs);
        config_free(r->cfg);
        return cli_fail(cli, CLI_ERR_CONFIG, "configuration has errors; see 'sluice config check'");
    }
    config_errors_free(&errs);
    struct config *cfg = r->cfg;
    struct privdrop pd;
    char err[512];
    if (secrets_check_files(cfg, &errs) > 0 || privdrop_plan(cfg, &pd, err, sizeof err) < 0) {
        print_config_errors(&errs);
        if (errs.n == 0)
            fprintf(stderr, "sluice: %s\n", err);
        config_errors_free(&errs);
        config_free(cfg);
        return CLI_EXIT_FAILURE;
    }
    if (log_open(cfg->log_format, cfg->log_file, cfg->log_level) < 0) {
        int rc = cli_fail(cli, CLI_ERR_IO, "cannot open log file %s: %s", cfg->log_file,
                          strerror(errno));
        config_free(cfg);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    if (mkdir(cfg->var_dir, 0700) < 0 && errno != EEXIST) {
        int rc = cli_fail(cli, CLI_ERR_IO, "cannot create %s: %s", cfg->var_dir, strerror(errno));
        config_free(cfg);
        log_close();
        return rc;
    }
    int rc = lock_var_dir(cli, cfg->var_dir, &sv.lock_fd);
    if (rc != CLI_EXIT_OK) {
        config_free(cfg);
        log_close();
        return rc;
    }
    /* secret_env values leave the environment before anything else runs */
    r->env_secrets = env_secrets_new();
    env_secrets_take(r->env_secrets, cfg);
    rc = CLI_EXIT_FAILURE;
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    r->base = event_base_new_with_config(ec);
    event_config_free(ec);
    r->dns = evdns_base_new(r->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!r->dns)
        r->dns = evdns_base_new(r->base, 0); /* no resolv.conf: names still fail cleanly */
    r->tls = load_tls(cfg);
    if (!r->tls) {
        fprintf(stderr, "sluice: TLS setup failed (see log); refusing to run without TLS\n");
        goto out;
    }
    r->users = users_load(cfg->users_file, err, sizeof err);
    if (!r->users) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    r->relay_nets = load_nets(cfg);
    if (!r->relay_nets)
        goto out;
    if (policy_open(r, err, sizeof err) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    r->signing = signing_load(cfg, err, sizeof err);
    if (!r->signing) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    if (spool_open(cfg->spool_dir, r->base, &r->spool, err, sizeof err) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    spool_set_segment_size(r->spool, (uint64_t)cfg->spool_segment_size);
    struct spool_stats st;
    spool_get_stats(r->spool, &st);
    log_event(LOG_INFO, "spool.recovered", "messages", "#%llu", (unsigned long long)st.messages,
              "active", "#%llu", (unsigned long long)st.active, "held", "#%llu",
              (unsigned long long)st.held, "dead", "#%llu", (unsigned long long)st.dead, "records",
              "#%llu", (unsigned long long)st.records, NULL);
    if (observe_open(r, err, sizeof err) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    r->observer = &observe_listeners;
    r->hooks.session_start = session_start;
    r->hooks.session_evict_unauth = session_evict_unauth;
    r->hooks.upstream_recovered = on_upstream_recovered;
    r->hooks.message_durable = on_message_durable;
    r->worker = worker_new(r->base, 2);
    int tls_threads = cfg->server_threads == CONFIG_AUTO ? (int)sysconf(_SC_NPROCESSORS_ONLN)
                                                         : cfg->server_threads;
    if (tls_threads > 0 && r->tls) {
        r->tls_offload = tls_offload_new(r->base, tls_threads, err, sizeof err);
        if (!r->tls_offload)
            log_event(LOG_WARN, "tls.offload_failed", "error", "%s", err, NULL);
    }
    r->deliver = deliver_new(r, err, sizeof err);
    if (!r->deliver) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    r->queue = queue_new(r);
    queue_load(r->queue);
    r->listeners = listeners_open(r, err, sizeof err);
    if (!r->listeners) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    if (cfg->http_listen && *cfg->http_listen) {
        r->metrics = metrics_http_open(r, observe_fill_metrics, err, sizeof err);
        if (!r->metrics) {
            fprintf(stderr, "sluice: %s\n", err);
            goto out;
        }
    }
    if (api_start(r, err, sizeof err) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    r->control = control_open(r, err, sizeof err);
    if (!r->control) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    if (privdrop_apply(cfg, &pd, err, sizeof err) < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    sv.sig_term = evsignal_new(r->base, SIGTERM, on_terminate, &sv);
    sv.sig_int = evsignal_new(r->base, SIGINT, on_terminate, &sv);
    sv.sig_hup = evsignal_new(r->base, SIGHUP, on_reload, &sv);
    event_add(sv.sig_term, NULL);
    event_add(sv.sig_int, NULL);
    event_add(sv.sig_hup, NULL);
    sv.compact_timer = event_new(r->base, -1, EV_PERSIST, on_compact, &sv);
    struct timeval ctv = {2, 0};
    event_add(sv.compact_timer, &ctv);
    log_event(LOG_INFO, "server.ready", "hostname", "%s", cfg->hostname, "submission", "%s",
              cfg->listen_submission, "smtps", "%s", cfg->listen_smtps, "config", "%s",
              sv.config_path ? sv.config_path : "embedded defaults", "pid", "#%d", (int)getpid(),
              "without_auth", "%s", relay_networks_in_force(cfg), "tls_threads", "#%d",
              tls_offload_threads(r->tls_offload), NULL);
    serve_banner(stderr, cfg, sv.config_path, relay_networks_in_force(cfg),
                 program_invocation_name);
    event_base_dispatch(r->base);
    rc = 0;
    log_event(LOG_INFO, "server.stopped", "accepted", "#%llu", (unsigned long long)r->n.accepted,
              NULL);
out:
    session_close_all(r);
    api_stop(r);
    tls_offload_free(r->tls_offload); /* handshakes in flight end, their sessions with them */
    r->tls_offload = NULL;
    metrics_http_free(r->metrics);
    control_free(r->control);
    worker_free(r->worker);
    spool_close(r->spool);
    queue_free(r->queue);
    deliver_free(r->deliver);
    listeners_free(r->listeners);
    if (sv.sig_term) {
        event_free(sv.sig_term);
        event_free(sv.sig_int);
        event_free(sv.sig_hup);
        event_free(sv.compact_timer);
    }
    if (sv.drain_timer)
        event_free(sv.drain_timer);
    r->observer = NULL;
    observe_close(r);
    policy_close(r);
    users_free(r->users);
    signing_free(r->signing);
    if (r->relay_nets)
        cidr_list_free(r->relay_nets);
    free(r->relay_nets);
    SSL_CTX_free(r->tls);
    if (r->dns)
        evdns_base_free(r->dns, 0);
    if (r->base)
        event_base_free(r->base);
    config_free(r->cfg);
    env_secrets_free(r->env_secrets);
    log_close();
    if (sv.lock_fd >= 0)
        close(sv.lock_fd);
    return rc;
}
