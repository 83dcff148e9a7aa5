/* kefu-gateway: reads the configuration, then runs N gateway processes on one port
 * (SO_REUSEPORT), restarting any that dies and forwarding SIGTERM/SIGHUP to them. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway.h"
#include "kefu/log.h"

#define MAX_PROCS 256

static volatile sig_atomic_t got_term, got_hup;

/* SIGCHLD sets nothing: it only ends the master's wait, and the loop reaps every exited
 * process each time round. */
static void on_sig(int sig) {
    if (sig == SIGHUP)
        got_hup = 1;
    else if (sig != SIGCHLD)
        got_term = 1;
}

static int g_argc;
static char **g_argv;
static sigset_t run_mask; /* the mask the master started with, the four signals it handles
                           * unblocked: its wait and its children use it */

static pid_t spawn(int index, const gw_options *opt, const char *config_file) {
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        sigprocmask(SIG_SETMASK, &run_mask, NULL);
        /* A process whose master died drains and exits: nobody would restart or stop it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != master) _exit(0);
        _exit(gw_server_run(index, opt, config_file, g_argc, g_argv));
    }
    return pid;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    int printed = kf_config_print_flags(gw_option_table, &gw_config_info, argc, argv);
    if (printed >= 0) return printed;
    gw_options opt;
    memset(&opt, 0, sizeof(opt));
    g_argc = argc;
    g_argv = argv;
    tzset(); /* ticket days follow TZ */
    const char *config_file = kf_config_file_arg(argc, argv);
    static const char *const passthru[] = {"config", NULL};
    char err[512];
    if (kf_config_load(gw_option_table, &opt, config_file, argc, argv, passthru, 0, err,
                       sizeof(err)) < 0) {
        fprintf(stderr, "kefu-gateway: %s\n", err);
        kf_config_free(gw_option_table, &opt); /* what was set before the error */
        return 2;
    }
    int lvl = kf_log_parse_level(opt.log_level);
    if (lvl < 0) {
        fprintf(stderr, "kefu-gateway: log_level must be debug, info, warn, error or off\n");
        kf_config_free(gw_option_table, &opt);
        return 2;
    }
    kf_log_level = lvl;
    kf_log_set_ident("master");
    if (opt.ack_replicas > 0 && opt.ack_timeout_ms >= opt.redis_timeout_ms) {
        /* a WAIT holds its connection: a longer one would look like a dead server */
        fprintf(stderr, "kefu-gateway: ack_timeout_ms (%lld) must be below redis_timeout_ms (%lld)\n",
                opt.ack_timeout_ms, opt.redis_timeout_ms);
        kf_config_free(gw_option_table, &opt);
        return 2;
    }
    /* A gateway on the public development secret accepts tokens anyone can sign: only when
     * asked for by name, never because a secret was forgotten. */
    if (!opt.jwt_secrets || !opt.jwt_secrets[0]) {
        if (!opt.dev_secret) {
            kf_error("no jwt_secrets configured; refusing to start. Set jwt_secrets (config file, "
                     "KEFU_JWT_SECRETS or --jwt-secrets; e.g. the output of 'openssl rand -hex "
                     "32'), or for development only pass --dev-secret (dev_secret yes) to accept "
                     "tokens signed with the public development secret");
            kf_config_free(gw_option_table, &opt);
            return 2;
        }
        kf_warn("dev_secret: no jwt_secrets, so tokens signed with the public development "
                "secret are accepted; anyone can sign them: never do this in production");
    }
    if (!opt.node_name[0]) {
        char host[64] = "kefu";
        gethostname(host, sizeof(host) - 1);
        free(opt.node_name);
        opt.node_name = strdup(host);
    }
    int nprocs = (int)opt.processes;
    if (nprocs <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nprocs = n > 0 ? (int)(n > MAX_PROCS ? MAX_PROCS : n) : 1;
    }
    if (gw_metrics_init(nprocs) < 0) {
        fprintf(stderr, "kefu-gateway: cannot map shared metrics\n");
        return 1;
    }

    /* SIGTERM, SIGINT, SIGHUP and SIGCHLD stay blocked except while the master waits in
     * ppoll(), which unblocks them atomically: a signal that arrives after the flags were
     * checked is delivered by that wait instead of being noticed only when a process exits
     * (a blocking waitpid() there would keep a SIGTERM waiting until systemd's SIGKILL). */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &run_mask);
    /* the wait, and the children, take these four unblocked even when whoever started the
     * master had blocked them (a SIGTERM would otherwise wait for systemd's SIGKILL) */
    sigdelset(&run_mask, SIGTERM);
    sigdelset(&run_mask, SIGINT);
    sigdelset(&run_mask, SIGHUP);
    sigdelset(&run_mask, SIGCHLD);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sig;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pid_t pids[MAX_PROCS];
    int64_t started[MAX_PROCS], restart_at[MAX_PROCS]; /* mono_ms(); restart_at 0: none due */
    for (int i = 0; i < nprocs; i++) {
        pids[i] = spawn(i, &opt, config_file);
        started[i] = mono_ms();
        restart_at[i] = 0;
        if (pids[i] < 0) {
            kf_error("fork failed: %s", strerror(errno));
            return 1;
        }
    }
    kf_info("started %d gateway processes on port %lld", nprocs, opt.port);

    int alive = nprocs, due = 0, stopping = 0, failed = 0;
    while (alive > 0 || due > 0) {
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < nprocs; i++) {
                if (pids[i] != pid) continue;
                pids[i] = 0;
                alive--;
                int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                int64_t ran = mono_ms() - started[i];
                if (stopping) {
                    /* Shutting down: the exit status reports how the processes ended now. A
                     * death that raced the SIGTERM is still told, not taken for a drain. */
                    if (!clean) {
                        failed = 1;
                        kf_error("process %d (pid %d) died (%s %d) while draining", i, (int)pid,
                                 WIFSIGNALED(status) ? "signal" : "exit status",
                                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                    }
                    break;
                }
                if (WIFEXITED(status) && WEXITSTATUS(status) == 1 && ran < 2000) {
                    kf_error("process %d failed at start-up; not restarting", i);
                    failed = 1;
                    break;
                }
                if (clean)
                    kf_info("process %d (pid %d) exited; restarting", i, (int)pid);
                else
                    kf_error("process %d (pid %d) died (%s %d); restarting", i, (int)pid,
                             WIFSIGNALED(status) ? "signal" : "exit status",
                             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                /* one that dies at once is restarted a second later, not in a tight loop */
                restart_at[i] = ran < 1000 ? mono_ms() + 1000 : mono_ms();
                due++;
                break;
            }
        }
        /* after reaping, so that the count is true and a death just before is told as one */
        if (got_term) {
            got_term = 0;
            kf_info("SIGTERM: draining %d processes", alive);
            gw_metrics_host_stop(); /* before they hear it: they keep their listeners */
            for (int i = 0; i < nprocs; i++) {
                if (pids[i] > 0) kill(pids[i], SIGTERM);
                restart_at[i] = 0; /* no restarts from now on */
            }
            due = 0;
            stopping = 1;
        }
        if (got_hup) {
            got_hup = 0;
            for (int i = 0; i < nprocs; i++)
                if (pids[i] > 0) kill(pids[i], SIGHUP);
        }
        int64_t now = mono_ms(), next = -1;
        for (int i = 0; i < nprocs && due > 0; i++) {
            if (!restart_at[i]) continue;
            if (restart_at[i] > now) {
                if (next < 0 || restart_at[i] < next) next = restart_at[i];
                continue;
            }
            restart_at[i] = 0;
            due--;
            pids[i] = spawn(i, &opt, config_file);
            started[i] = mono_ms();
            if (pids[i] > 0)
                alive++;
            else
                kf_error("fork failed: %s; process %d not restarted", strerror(errno), i);
        }
        if (alive == 0 && due == 0) break;
        struct timespec ts, *tmo = NULL;
        if (next >= 0) {
            int64_t wait = next - now;
            ts.tv_sec = (time_t)(wait / 1000);
            ts.tv_nsec = (long)(wait % 1000) * 1000000;
            tmo = &ts;
        }
        ppoll(NULL, 0, tmo, &run_mask); /* returns on a signal (EINTR) or at the next restart */
    }
    kf_config_free(gw_option_table, &opt);
    return failed ? 1 : 0;
}
