/* kefu-gateway: reads the configuration, then runs N gateway processes on one port
 * (SO_REUSEPORT), restarting any that dies and forwarding SIGTERM/SIGHUP to them. */
#include <errno.h>
#include <signal.h>
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

static void on_sig(int sig) {
    if (sig == SIGHUP)
        got_hup = 1;
    else
        got_term = 1;
}

static int g_argc;
static char **g_argv;

static pid_t spawn(int index, const gw_options *opt, const char *config_file) {
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        /* A process whose master died drains and exits: nobody would restart or stop it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != master) _exit(0);
        _exit(gw_server_run(index, opt, config_file, g_argc, g_argv));
    }
    return pid;
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
        return 2;
    }
    int lvl = kf_log_parse_level(opt.log_level);
    if (lvl < 0) {
        fprintf(stderr, "kefu-gateway: log_level must be debug, info, warn, error or off\n");
        kf_config_free(gw_option_table, &opt);
        return 2;
    }
    kf_log_level = lvl;
    if (opt.ack_replicas > 0 && opt.ack_timeout_ms >= opt.redis_timeout_ms) {
        /* a WAIT holds its connection: a longer one would look like a dead server */
        fprintf(stderr, "kefu-gateway: ack_timeout_ms (%lld) must be below redis_timeout_ms (%lld)\n",
                opt.ack_timeout_ms, opt.redis_timeout_ms);
        kf_config_free(gw_option_table, &opt);
        return 2;
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
    kf_log_set_ident("master");

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sig;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pid_t pids[MAX_PROCS];
    time_t started[MAX_PROCS];
    for (int i = 0; i < nprocs; i++) {
        pids[i] = spawn(i, &opt, config_file);
        started[i] = time(NULL);
        if (pids[i] < 0) {
            kf_error("fork failed: %s", strerror(errno));
            return 1;
        }
    }
    kf_info("started %d gateway processes on port %lld", nprocs, opt.port);

    int alive = nprocs, status = 0, failed = 0;
    while (alive > 0) {
        if (got_term) {
            got_term = 0;
            kf_info("SIGTERM: draining %d processes", alive);
            for (int i = 0; i < nprocs; i++)
                if (pids[i] > 0) kill(pids[i], SIGTERM);
            opt.processes = -1; /* no restarts from now on */
        }
        if (got_hup) {
            got_hup = 0;
            for (int i = 0; i < nprocs; i++)
                if (pids[i] > 0) kill(pids[i], SIGHUP);
        }
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < nprocs; i++) {
            if (pids[i] != pid) continue;
            pids[i] = 0;
            alive--;
            int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (opt.processes == -1) {
                /* Shutting down: the exit status reports how the processes ended now. */
                if (!clean) failed = 1;
                break;
            }
            if (WIFEXITED(status) && WEXITSTATUS(status) == 1 && time(NULL) - started[i] < 2) {
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
            if (time(NULL) - started[i] < 1) sleep(1);
            pids[i] = spawn(i, &opt, config_file);
            started[i] = time(NULL);
            if (pids[i] > 0) alive++;
            break;
        }
    }
    kf_config_free(gw_option_table, &opt);
    return failed ? 1 : 0;
}
