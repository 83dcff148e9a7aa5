/* kefu-load: load generator for kefu-gateway. Parses options, forks the worker processes,
 * starts them together, prints a progress line each second, merges their statistics into the
 * summary, the JSON result file and the gnuplot charts. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kefu/alloc.h"
#include "load.h"

#define DEV_SECRET "kefu-dev-secret-change-me"
#define FD_RESERVE 100

static const char usage_text[] =
    "Usage: kefu-load SCENARIO [options]\n"
    "\n"
    "Load generator for kefu-gateway (protocol v1 over WebSocket, real JWTs, loopback only).\n"
    "\n"
    "Scenarios:\n"
    "  idle      open and hold --conns authenticated connections with application pings;\n"
    "            reports the connect+auth rate, failures, disconnects and ping round trips\n"
    "  relay     --pairs customer/agent pairs: the customer opens a conversation on the first\n"
    "            --url, its agent accepts it on the second; then msg.send open-loop at --rate\n"
    "            messages/s in total for --duration; end-to-end latency and counts of sent,\n"
    "            acked, delivered live, healed by history (the client rules of\n"
    "            docs/protocol.md: prev gaps and resync notices), never seen and\n"
    "            duplicated messages (by cid)\n"
    "  journey   --customers open conversations, --agents poll queue.list and accept them,\n"
    "            they chat (--msgs turns), the agent closes; --reconnect-pct of the journeys\n"
    "            drop the connection mid-chat, reconnect and resume with history after=\n"
    "  worker    automatic assignment by kefu-worker (run it with --routes '*=general'):\n"
    "            --agents sign in (agent.status available) on the second --url, --customers\n"
    "            each send one conv.open on the first, open-loop at --rate opens/s; reports\n"
    "            opened, assigned, never assigned within --drain, assignments/s and the\n"
    "            conv.open to conv.assigned latency; an agent at capacity closes its oldest\n"
    "            conversation. One process (--procs 1)\n"
    "\n"
    "Common options:\n"
    "  --url URL            gateway node, ws://127.0.0.x:PORT/ws; repeat for more nodes\n"
    "                       (default ws://127.0.0.1:8080/ws). relay/journey: customers use\n"
    "                       the first, agents the second\n"
    "  --format F           json (default) or msgpack\n"
    "  --auth A             hello (default: token in a hello frame) or url (?token=)\n"
    "  --secret S           JWT HS256 secret (default: first of $KEFU_JWT_SECRETS, else the\n"
    "                       development secret, for gateways run with --dev-secret)\n"
    "  --procs N            worker processes (default 1); each holds at most ~19.9k sockets\n"
    "  --src-ips N          spread connections over N loopback source addresses 127.0.x.y\n"
    "                       (default: one per 2000 connections, none up to 1000)\n"
    "  --duration S         run time in seconds: hold (idle), send (relay), start journeys\n"
    "                       (journey); default 10\n"
    "  --connect-rate R     new connections per second over all workers (default 0: as fast\n"
    "                       as --inflight allows)\n"
    "  --inflight N         handshakes in flight per worker (default 256)\n"
    "  --setup-timeout S    longest connection/pairing phase (default 60)\n"
    "  --drain S            after the run, longest wait for outstanding answers (default 5)\n"
    "  --json FILE          write the results as JSON\n"
    "  --plot PREFIX        draw PREFIX-time.png (latency percentiles and throughput per\n"
    "                       second) and PREFIX-dist.png (latency distribution) with gnuplot\n"
    "  --ready-file FILE    written when the run phase starts (all connections set up)\n"
    "  --quiet              no progress lines\n"
    "  -h, --help           this help\n"
    "\n"
    "idle:     --conns N (default 1000)   --ping-interval S (default 10; 0 = no pings)\n"
    "relay:    --pairs P (default 100)    --rate R msgs/s in total (default 1000)\n"
    "          --size B text bytes (default 64)   --both (agents send too; --rate is the total)\n"
    "journey:  --customers C (default 50) --agents A (default C/5, at least 1)\n"
    "          --agent-chats N conversations per agent (default 5)  --msgs M turns (default 5)\n"
    "          --think-ms T between turns (default 100)   --agent-delay-ms D before a reply\n"
    "          (default 50)   --reconnect-pct P (default 20)  --reconnect-ms T (default 200)\n"
    "          --queue-poll-ms T (default 100)  --pause-ms T between journeys (default 500)\n"
    "          --step-timeout-ms T a journey step's limit (default 10000)\n"
    "worker:   --customers C (default 50) --agents A (default C/5, at least 1)\n"
    "          --rate R conv.open per second in total (default 1000)\n"
    "          --max-chats N the agents' max_chats claim (default 5); skills [\"general\"]\n"
    "\n"
    "Latencies (ms; p50 p90 p99 p99.9 max): connect = TCP connect to welcome; ping = ping to\n"
    "pong; ack = scheduled send to the ok; e2e = scheduled send to delivery at the agent\n"
    "(relay) or customer message to agent (journey); e2e_back = agent to customer; assign =\n"
    "conv.open to the assigned push (journey: conv.state at the customer; worker:\n"
    "conv.assigned at the agent); history = history round trip after a reconnect.\n"
    "\n"
    "Exit status: 0 when every connection, message and journey succeeded (nothing lost or\n"
    "duplicated), 1 when something failed, 2 on bad usage.\n"
    "\n"
    "Example: kefu-load relay --url ws://127.0.0.1:8080/ws --url ws://127.0.0.1:8081/ws \\\n"
    "           --pairs 1000 --rate 10000 --duration 20 --procs 2 --json r.json --plot r\n";

static kl_opts O;
static volatile sig_atomic_t interrupted;

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "kefu-load: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'kefu-load --help'.\n");
    exit(2);
}

static double num(const char *opt, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi || v != v) {
        fprintf(stderr, "kefu-load: %s must be a number from %g to %g, got '%s'\n", opt, lo, hi, s);
        exit(2);
    }
    return v;
}

enum {
    OPT_URL = 256, OPT_FORMAT, OPT_AUTH, OPT_SECRET, OPT_PROCS, OPT_SRC, OPT_DURATION, OPT_CRATE,
    OPT_INFLIGHT, OPT_SETUP, OPT_DRAIN, OPT_JSON, OPT_PLOT, OPT_READY, OPT_QUIET, OPT_CONNS,
    OPT_PING, OPT_PAIRS, OPT_RATE, OPT_SIZE, OPT_BOTH, OPT_CUST, OPT_AGENTS, OPT_ACHATS, OPT_MSGS,
    OPT_THINK, OPT_ADELAY, OPT_RECPCT, OPT_RECMS, OPT_QPOLL, OPT_PAUSE, OPT_STEP, OPT_MAXCHATS,
};

static void parse(int argc, char **argv) {
    static const struct option lo[] = {
        {"url", 1, 0, OPT_URL}, {"format", 1, 0, OPT_FORMAT}, {"auth", 1, 0, OPT_AUTH},
        {"secret", 1, 0, OPT_SECRET}, {"procs", 1, 0, OPT_PROCS}, {"src-ips", 1, 0, OPT_SRC},
        {"duration", 1, 0, OPT_DURATION}, {"connect-rate", 1, 0, OPT_CRATE},
        {"inflight", 1, 0, OPT_INFLIGHT}, {"setup-timeout", 1, 0, OPT_SETUP},
        {"drain", 1, 0, OPT_DRAIN}, {"json", 1, 0, OPT_JSON}, {"plot", 1, 0, OPT_PLOT},
        {"ready-file", 1, 0, OPT_READY}, {"quiet", 0, 0, OPT_QUIET}, {"conns", 1, 0, OPT_CONNS},
        {"ping-interval", 1, 0, OPT_PING}, {"pairs", 1, 0, OPT_PAIRS}, {"rate", 1, 0, OPT_RATE},
        {"size", 1, 0, OPT_SIZE}, {"both", 0, 0, OPT_BOTH}, {"customers", 1, 0, OPT_CUST},
        {"agents", 1, 0, OPT_AGENTS}, {"agent-chats", 1, 0, OPT_ACHATS}, {"msgs", 1, 0, OPT_MSGS},
        {"think-ms", 1, 0, OPT_THINK}, {"agent-delay-ms", 1, 0, OPT_ADELAY},
        {"reconnect-pct", 1, 0, OPT_RECPCT}, {"reconnect-ms", 1, 0, OPT_RECMS},
        {"queue-poll-ms", 1, 0, OPT_QPOLL}, {"pause-ms", 1, 0, OPT_PAUSE},
        {"step-timeout-ms", 1, 0, OPT_STEP}, {"max-chats", 1, 0, OPT_MAXCHATS}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        }
    if (argc < 2 || argv[1][0] == '-') die("%s", "a scenario is required: idle, relay, journey or worker");
    if (!strcmp(argv[1], "idle")) O.scenario = SC_IDLE;
    else if (!strcmp(argv[1], "relay")) O.scenario = SC_RELAY;
    else if (!strcmp(argv[1], "journey")) O.scenario = SC_JOURNEY;
    else if (!strcmp(argv[1], "worker")) O.scenario = SC_WORKER;
    else die("unknown scenario '%s' (idle, relay, journey, worker)", argv[1]);

    O.procs = 1;
    O.duration_s = 10;
    O.inflight = 256;
    O.setup_timeout_s = 60;
    O.drain_s = 5;
    O.conns = 1000;
    O.ping_interval_s = 10;
    O.pairs = 100;
    O.rate = 1000;
    O.size = 64;
    O.customers = 50;
    O.agents = 0;
    O.agent_chats = 5;
    O.msgs = 5;
    O.think_ms = 100;
    O.agent_delay_ms = 50;
    O.reconnect_pct = 20;
    O.reconnect_ms = 200;
    O.queue_poll_ms = 100;
    O.pause_ms = 500;
    O.step_timeout_ms = 10000;
    O.max_chats = 5;
    O.src_ips = -1;
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case OPT_URL:
            if (O.nurls >= KL_MAX_URLS) die("%s", "too many --url");
            O.urls[O.nurls++] = optarg;
            break;
        case OPT_FORMAT:
            if (!strcmp(optarg, "json")) O.msgpack = 0;
            else if (!strcmp(optarg, "msgpack")) O.msgpack = 1;
            else die("--format must be json or msgpack, got '%s'", optarg);
            break;
        case OPT_AUTH:
            if (!strcmp(optarg, "hello")) O.auth_url = 0;
            else if (!strcmp(optarg, "url")) O.auth_url = 1;
            else die("--auth must be hello or url, got '%s'", optarg);
            break;
        case OPT_SECRET: O.secret = optarg; break;
        case OPT_PROCS: O.procs = (int)num("--procs", optarg, 1, KL_MAX_PROCS); break;
        case OPT_SRC: O.src_ips = (int)num("--src-ips", optarg, 0, KL_SRC_MAX); break;
        case OPT_DURATION: O.duration_s = num("--duration", optarg, 0.1, 86400); break;
        case OPT_CRATE: O.connect_rate = num("--connect-rate", optarg, 0, 1e7); break;
        case OPT_INFLIGHT: O.inflight = (int)num("--inflight", optarg, 1, 100000); break;
        case OPT_SETUP: O.setup_timeout_s = num("--setup-timeout", optarg, 1, 3600); break;
        case OPT_DRAIN: O.drain_s = num("--drain", optarg, 0, 600); break;
        case OPT_JSON: O.json_path = optarg; break;
        case OPT_PLOT: O.plot_prefix = optarg; break;
        case OPT_READY: O.ready_file = optarg; break;
        case OPT_QUIET: O.quiet = 1; break;
        case OPT_CONNS: O.conns = (long)num("--conns", optarg, 1, 2000000); break;
        case OPT_PING: O.ping_interval_s = num("--ping-interval", optarg, 0, 3600); break;
        case OPT_PAIRS: O.pairs = (long)num("--pairs", optarg, 1, 1000000); break;
        case OPT_RATE: O.rate = num("--rate", optarg, 0.1, 1e7); break;
        case OPT_SIZE: O.size = (int)num("--size", optarg, 1, 8000); break;
        case OPT_BOTH: O.both = 1; break;
        case OPT_CUST: O.customers = (long)num("--customers", optarg, 1, 1000000); break;
        case OPT_AGENTS: O.agents = (long)num("--agents", optarg, 1, 1000000); break;
        case OPT_ACHATS: O.agent_chats = (int)num("--agent-chats", optarg, 1, 1000); break;
        case OPT_MSGS: O.msgs = (int)num("--msgs", optarg, 1, 60); break;
        case OPT_THINK: O.think_ms = (int)num("--think-ms", optarg, 0, 600000); break;
        case OPT_ADELAY: O.agent_delay_ms = (int)num("--agent-delay-ms", optarg, 0, 600000); break;
        case OPT_RECPCT: O.reconnect_pct = (int)num("--reconnect-pct", optarg, 0, 100); break;
        case OPT_RECMS: O.reconnect_ms = (int)num("--reconnect-ms", optarg, 0, 600000); break;
        case OPT_QPOLL: O.queue_poll_ms = (int)num("--queue-poll-ms", optarg, 10, 600000); break;
        case OPT_PAUSE: O.pause_ms = (int)num("--pause-ms", optarg, 0, 600000); break;
        case OPT_STEP: O.step_timeout_ms = (int)num("--step-timeout-ms", optarg, 100, 3600000); break;
        case OPT_MAXCHATS: O.max_chats = (int)num("--max-chats", optarg, 1, 1000); break;
        default: die("%s", "bad option");
        }
    }
    if (optind < argc) die("unexpected argument '%s'", argv[optind]);
    if (O.nurls == 0) O.urls[O.nurls++] = "ws://127.0.0.1:8080/ws";
    for (int i = 0; i < O.nurls; i++) {
        struct sockaddr_in dst;
        char target[256];
        const char *err;
        if (ws_parse_url(O.urls[i], &dst, target, sizeof(target), &err) < 0) {
            char m[400];
            snprintf(m, sizeof(m), "%s: %s", O.urls[i], err);
            die("%s", m);
        }
    }
    if (!O.secret) {
        static char first[256];
        const char *env = getenv("KEFU_JWT_SECRETS");
        if (env && *env) {
            snprintf(first, sizeof(first), "%.*s", (int)strcspn(env, ","), env);
            O.secret = first;
        } else {
            O.secret = DEV_SECRET;
        }
    }
    if (O.agents == 0) O.agents = O.customers / 5 > 0 ? O.customers / 5 : 1;
    long total = O.scenario == SC_IDLE ? O.conns : O.scenario == SC_RELAY ? 2 * O.pairs
                                                                             : O.customers + O.agents;
    if (O.scenario == SC_JOURNEY && O.agents < O.procs)
        die("%s", "--agents must be at least --procs (every worker needs an agent)");
    if (O.scenario == SC_JOURNEY && O.customers < O.procs)
        die("%s", "--customers must be at least --procs");
    if (O.scenario == SC_WORKER && O.procs != 1)
        die("%s", "worker runs in one process (--procs 1): it matches opens to assignments");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        long per = (total + O.procs - 1) / O.procs;
        if ((rlim_t)per + FD_RESERVE > rl.rlim_max) {
            char m[160];
            snprintf(m, sizeof(m), "%ld sockets per worker exceed the file limit %llu; use more --procs",
                     per, (unsigned long long)rl.rlim_max);
            die("%s", m);
        }
    }
    /* The kernel's search for a free ephemeral port slows down as one source address fills
     * up (connect() spends its time in __inet_check_established): keep each under ~2000. */
    if (O.src_ips < 0) O.src_ips = total > 1000 ? (int)((total + 1999) / 2000) : 0;
    uint8_t r[5];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) memset(r, (uint8_t)getpid(), sizeof(r));
    snprintf(O.run_id, sizeof(O.run_id), "k%02x%02x%02x", r[0], r[1], r[2]);
    /* Each run starts at another source address, away from the TIME_WAIT sockets of the last. */
    O.src_base = ((unsigned)r[3] << 8 | r[4]) % KL_SRC_MAX;
}

/* ---- merging and reporting ---- */

typedef struct snap {
    uint64_t c[KC__COUNT];
    uint64_t open, target;
    kl_hist h[KH__COUNT];
    int min_phase;
} snap;

typedef struct row {
    double t;
    int phase;
    uint64_t open;
    double conn_rate, sent_rate, acked_rate, deliv_rate, journey_rate, assign_rate;
    uint64_t q[KH__COUNT][5]; /* p50 p90 p99 p99.9 max of the interval, ns */
    uint64_t n[KH__COUNT];
} row;

static const char *const phase_names[] = {"start", "setup", "ready", "run", "drain", "done"};
static const double qs[4] = {0.5, 0.9, 0.99, 0.999};

static void take(kl_shared *sh, const int *alive, snap *s) {
    memset(s, 0, sizeof(*s));
    for (int h = 0; h < KH__COUNT; h++) kl_hist_init(&s->h[h]);
    s->min_phase = PH_DONE;
    for (int i = 0; i < sh->nworkers; i++) {
        kl_slot *sl = &sh->slot[i];
        for (int k = 0; k < KC__COUNT; k++) s->c[k] += kl_load(&sl->c[k]);
        s->open += kl_load(&sl->open);
        s->target += kl_load(&sl->target);
        for (int h = 0; h < KH__COUNT; h++) kl_hist_merge(&s->h[h], &sl->h[h]);
        int ph = kl_load32(&sl->phase);
        if (alive[i] && ph < s->min_phase) s->min_phase = ph;
    }
}

static int primary_hist(void) {
    if (O.scenario == SC_IDLE) return O.ping_interval_s > 0 ? KH_ping : KH_connect;
    if (O.scenario == SC_WORKER) return KH_assign;
    return KH_e2e;
}

static double ms(uint64_t ns) { return (double)ns / 1e6; }

static void progress(const row *r, const snap *cur) {
    if (O.quiet) return;
    char lat[160] = "";
    int h = primary_hist();
    if (r->phase == PH_SETUP || r->phase == PH_START) h = KH_connect;
    if (r->n[h])
        snprintf(lat, sizeof(lat), " | %s p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms", kl_hist_names[h],
                 ms(r->q[h][0]), ms(r->q[h][2]), ms(r->q[h][3]), ms(r->q[h][4]));
    const uint64_t *c = cur->c;
    if (O.scenario == SC_IDLE) {
        printf("[%6.1fs] %-5s open %llu/%llu +%.0f/s fail %llu disc %llu%s\n", r->t,
               phase_names[r->phase], (unsigned long long)r->open, (unsigned long long)cur->target,
               r->conn_rate, (unsigned long long)c[KC_conn_fail], (unsigned long long)c[KC_disconnects], lat);
    } else if (O.scenario == SC_RELAY) {
        printf("[%6.1fs] %-5s open %llu sent %.0f/s acked %.0f/s deliv %.0f/s failed %llu dup %llu%s\n",
               r->t, phase_names[r->phase], (unsigned long long)r->open, r->sent_rate, r->acked_rate,
               r->deliv_rate, (unsigned long long)c[KC_failed], (unsigned long long)c[KC_duplicated], lat);
    } else if (O.scenario == SC_WORKER) {
        printf("[%6.1fs] %-5s open %llu opened %llu assigned %llu (+%.0f/s) closed %llu failed %llu%s\n",
               r->t, phase_names[r->phase], (unsigned long long)r->open,
               (unsigned long long)c[KC_convs_opened], (unsigned long long)c[KC_convs_assigned],
               r->assign_rate, (unsigned long long)c[KC_convs_closed], (unsigned long long)c[KC_failed],
               lat);
    } else {
        printf("[%6.1fs] %-5s open %llu journeys %llu done (+%.1f/s) %llu failed, msgs %.0f/s, "
               "reconnects %llu%s\n",
               r->t, phase_names[r->phase], (unsigned long long)r->open,
               (unsigned long long)c[KC_journeys_done], r->journey_rate,
               (unsigned long long)c[KC_journeys_failed], r->deliv_rate,
               (unsigned long long)c[KC_reconnects], lat);
    }
    fflush(stdout);
}

static json_t *hist_json(const kl_hist *h) {
    double us = 1e3;
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)h->count,
                     "min", h->count ? (double)h->min / us : 0.0,
                     "mean", h->count ? (double)h->sum / (double)h->count / us : 0.0,
                     "p50", (double)kl_hist_quantile(h, 0.5) / us,
                     "p90", (double)kl_hist_quantile(h, 0.9) / us,
                     "p99", (double)kl_hist_quantile(h, 0.99) / us,
                     "p999", (double)kl_hist_quantile(h, 0.999) / us, "max", (double)h->max / us);
}

/* ---- gnuplot ---- */

static int write_plot(const char *prefix, const row *rows, size_t nrows, const snap *fin) {
    char path[1024], script[1024];
    int h = primary_hist();
    snprintf(path, sizeof(path), "%s-time.dat", prefix);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "# t p50_ms p90_ms p99_ms p999_ms max_ms throughput\n");
    for (size_t i = 0; i < nrows; i++) {
        const row *r = &rows[i];
        int hh = (r->phase <= PH_SETUP && O.scenario == SC_IDLE) ? KH_connect : h;
        double thr = O.scenario == SC_IDLE ? r->conn_rate : r->deliv_rate;
        if (r->n[hh])
            fprintf(f, "%.1f %.4f %.4f %.4f %.4f %.4f %.1f\n", r->t, ms(r->q[hh][0]), ms(r->q[hh][1]),
                    ms(r->q[hh][2]), ms(r->q[hh][3]), ms(r->q[hh][4]), thr);
        else
            fprintf(f, "%.1f NaN NaN NaN NaN NaN %.1f\n", r->t, thr);
    }
    fclose(f);
    snprintf(path, sizeof(path), "%s-dist.dat", prefix);
    if (!(f = fopen(path, "w"))) return -1;
    int blocks = 0;
    char titles[KH__COUNT][32];
    int which[KH__COUNT];
    for (int k = 0; k < KH__COUNT; k++) {
        if (!fin->h[k].count) continue;
        fprintf(f, "# %s\n", kl_hist_names[k]);
        /* x = 1/(1-q): 50 % at 2, 99 % at 100, 99.99 % at 10^4; 40 points per decade */
        for (int i = 0; i <= 200; i++) {
            double x = pow(10, (double)i / 40.0), q = 1 - 1 / x;
            if (q >= 1) break;
            fprintf(f, "%.6g %.6f\n", x, ms(kl_hist_quantile(&fin->h[k], q)));
        }
        fprintf(f, "%.6g %.6f\n\n\n", 1e5, ms(fin->h[k].max));
        snprintf(titles[blocks], sizeof(titles[0]), "%s", kl_hist_names[k]);
        which[blocks++] = k;
    }
    fclose(f);
    (void)which;
    const char *what = O.scenario == SC_IDLE ? "connections/s" : "messages delivered/s";
    snprintf(script, sizeof(script), "%s.gp", prefix);
    if (!(f = fopen(script, "w"))) return -1;
    fprintf(f,
            "set terminal pngcairo size 1100,800 font ',10'\n"
            "set output '%s-time.png'\n"
            "set multiplot layout 2,1 title 'kefu-load %s (run %s)'\n"
            "set grid\nset key outside right\nset logscale y\n"
            "set ylabel '%s latency (ms)'\nset xlabel 'time (s)'\n"
            "plot '%s-time.dat' u 1:2 w l lw 2 t 'p50', '' u 1:3 w l lw 2 t 'p90', "
            "'' u 1:4 w l lw 2 t 'p99', '' u 1:5 w l lw 2 t 'p99.9', '' u 1:6 w l t 'max'\n"
            "unset logscale y\nset ylabel '%s'\n"
            "plot '%s-time.dat' u 1:7 w l lw 2 t '%s'\n"
            "unset multiplot\n",
            prefix, O.scenario == SC_IDLE ? "idle" : O.scenario == SC_RELAY ? "relay" : "journey",
            O.run_id, kl_hist_names[h], prefix, what, prefix, what);
    fprintf(f,
            "set output '%s-dist.png'\nset title 'latency by percentile (run %s)'\n"
            "set logscale x\nset logscale y\nset grid\nset key top left\n"
            "set xlabel 'percentile'\nset ylabel 'latency (ms)'\n"
            "set xtics ('0%%%%' 1, '50%%%%' 2, '90%%%%' 10, '99%%%%' 100, '99.9%%%%' 1000, "
            "'99.99%%%%' 10000, 'max' 100000)\nplot ",
            prefix, O.run_id);
    for (int b = 0; b < blocks; b++)
        fprintf(f, "%s'%s-dist.dat' index %d u 1:2 w l lw 2 t '%s'", b ? ", " : "", prefix, b, titles[b]);
    if (!blocks) fprintf(f, "NaN t 'no samples'");
    fprintf(f, "\n");
    fclose(f);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "gnuplot '%s'", script);
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "kefu-load: gnuplot failed (%d); data and script are in %s-*.dat, %s\n", rc,
                prefix, script);
        return -1;
    }
    printf("plots: %s-time.png %s-dist.png\n", prefix, prefix);
    return 0;
}

/* ---- the parent ---- */

static void on_sigint(int sig) {
    (void)sig;
    interrupted++;
}

static void write_ready_file(int64_t go_ns) {
    if (!O.ready_file) return;
    FILE *f = fopen(O.ready_file, "w");
    if (f) {
        fprintf(f, "%lld\n", (long long)go_ns);
        fclose(f);
    }
}

int main(int argc, char **argv) {
    parse(argc, argv);
    size_t shsize = sizeof(kl_shared) + (size_t)O.procs * sizeof(kl_slot);
    kl_shared *sh = mmap(NULL, shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("kefu-load: mmap");
        return 1;
    }
    sh->nworkers = O.procs;
    for (int i = 0; i < O.procs; i++)
        for (int h = 0; h < KH__COUNT; h++) kl_hist_init(&sh->slot[i].h[h]);

    static const char *const names[] = {"idle", "relay", "journey", "worker"};
    if (!O.quiet) {
        printf("kefu-load %s: run %s, %d worker(s), %s, %s auth, %d url(s)", names[O.scenario],
               O.run_id, O.procs, O.msgpack ? "msgpack" : "json", O.auth_url ? "url" : "hello",
               O.nurls);
        if (O.src_ips) printf(", %d source addresses", O.src_ips);
        printf("\n");
        fflush(stdout);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pid_t pids[KL_MAX_PROCS];
    int alive[KL_MAX_PROCS], status[KL_MAX_PROCS];
    for (int i = 0; i < O.procs; i++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("kefu-load: fork");
            for (int k = 0; k < i; k++) kill(pids[k], SIGKILL);
            return 1;
        }
        if (pid == 0) {
            signal(SIGINT, SIG_IGN); /* the parent decides; Ctrl-C reaches the whole group */
            signal(SIGTERM, SIG_DFL);
            exit(kl_worker_main(sh, i, &O)); /* exit, not _exit: LeakSanitizer checks workers too */
        }
        pids[i] = pid;
        alive[i] = 1;
        status[i] = 0;
    }

    int64_t t_start = kl_now_ns();
    int64_t hard = t_start + (int64_t)((O.setup_timeout_s + O.duration_s + O.drain_s + 60) * 1e9);
    int64_t next_tick = t_start + 1000000000LL, prev_t = t_start;
    static snap prev, cur;
    take(sh, alive, &prev);
    size_t nrows = 0, caprows = 64;
    row *rows = kf_malloc(caprows * sizeof(row));
    int nalive = O.procs, killed = 0, handled_int = 0;
    int64_t run_end_seen = 0;
    uint64_t deliv_at_run_end = 0, sent_at_run_end = 0, acked_at_run_end = 0;
    uint64_t conn_ok_at_ready = 0;

    while (nalive > 0) {
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
        for (int i = 0; i < O.procs; i++) {
            if (!alive[i]) continue;
            int st;
            pid_t r = waitpid(pids[i], &st, WNOHANG);
            if (r == pids[i]) {
                alive[i] = 0;
                status[i] = st;
                nalive--;
                if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                    fprintf(stderr, "kefu-load: worker %d ended with %s %d\n", i,
                            WIFSIGNALED(st) ? "signal" : "status",
                            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            }
        }
        int64_t now = kl_now_ns();
        if (interrupted > handled_int) {
            handled_int = interrupted;
            kl_store32(&sh->stop, handled_int);
            if (handled_int >= 3)
                for (int i = 0; i < O.procs; i++)
                    if (alive[i]) kill(pids[i], SIGKILL);
        }
        if (now > hard && !killed) {
            fprintf(stderr, "kefu-load: hard deadline passed; killing the workers\n");
            for (int i = 0; i < O.procs; i++)
                if (alive[i]) kill(pids[i], SIGKILL);
            killed = 1;
        }
        /* Start the run once every live worker is set up. */
        int min_phase = PH_DONE;
        for (int i = 0; i < O.procs; i++) {
            int ph = kl_load32(&sh->slot[i].phase);
            if (alive[i] && ph < min_phase) min_phase = ph;
        }
        if (!kl_load64(&sh->go_ns) && min_phase >= PH_READY && nalive > 0) {
            int64_t go = now + 100000000LL;
            __atomic_store_n(&sh->go_ns, go, __ATOMIC_RELEASE);
            write_ready_file(go);
            snap s;
            take(sh, alive, &s);
            conn_ok_at_ready = s.c[KC_conn_ok];
        }
        if (!run_end_seen && kl_load64(&sh->go_ns) && min_phase >= PH_DRAIN) {
            run_end_seen = now;
            snap s;
            take(sh, alive, &s);
            deliv_at_run_end = s.c[KC_delivered];
            sent_at_run_end = s.c[KC_sent];
            acked_at_run_end = s.c[KC_acked];
        }
        if (now < next_tick && nalive > 0) continue;
        next_tick += 1000000000LL;
        if (next_tick < now) next_tick = now + 1000000000LL;
        take(sh, alive, &cur);
        double dt = (double)(now - prev_t) / 1e9;
        prev_t = now;
        if (nrows == caprows) rows = kf_realloc(rows, (caprows *= 2) * sizeof(row));
        row *r = &rows[nrows++];
        memset(r, 0, sizeof(*r));
        r->t = (double)(now - t_start) / 1e9;
        r->phase = nalive ? cur.min_phase : PH_DONE;
        r->open = cur.open;
        r->conn_rate = (double)(cur.c[KC_conn_ok] - prev.c[KC_conn_ok]) / dt;
        r->sent_rate = (double)(cur.c[KC_sent] - prev.c[KC_sent]) / dt;
        r->acked_rate = (double)(cur.c[KC_acked] - prev.c[KC_acked]) / dt;
        r->deliv_rate = (double)(cur.c[KC_delivered] - prev.c[KC_delivered]) / dt;
        r->journey_rate = (double)(cur.c[KC_journeys_done] - prev.c[KC_journeys_done]) / dt;
        r->assign_rate = (double)(cur.c[KC_convs_assigned] - prev.c[KC_convs_assigned]) / dt;
        for (int h = 0; h < KH__COUNT; h++) {
            kl_hist d;
            kl_hist_diff(&d, &cur.h[h], &prev.h[h]);
            r->n[h] = d.count;
            for (int q = 0; q < 4; q++) r->q[h][q] = kl_hist_quantile(&d, qs[q]);
            r->q[h][4] = d.max;
        }
        progress(r, &cur);
        prev = cur;
    }

    /* Final merge: every worker has exited, so the slots are stable. */
    snap fin;
    for (int i = 0; i < O.procs; i++) alive[i] = 1;
    take(sh, alive, &fin);
    int64_t go = sh->go_ns;
    int64_t first_connect = 0, last_welcome = 0, run_end = 0, first_open = 0, last_assign = 0;
    for (int i = 0; i < O.procs; i++) {
        kl_slot *sl = &sh->slot[i];
        if (sl->first_connect_ns && (!first_connect || sl->first_connect_ns < first_connect))
            first_connect = sl->first_connect_ns;
        if (sl->last_welcome_ns > last_welcome) last_welcome = sl->last_welcome_ns;
        if (sl->run_end_ns > run_end) run_end = sl->run_end_ns;
        if (sl->first_open_ns && (!first_open || sl->first_open_ns < first_open))
            first_open = sl->first_open_ns;
        if (sl->last_assign_ns > last_assign) last_assign = sl->last_assign_ns;
    }
    double setup_s = last_welcome > first_connect ? (double)(last_welcome - first_connect) / 1e9 : 0;
    double conn_rate = setup_s > 0 ? (double)conn_ok_at_ready / setup_s : 0;
    double run_s = go && run_end > go ? (double)(run_end - go) / 1e9 : 0;
    double sent_rate = run_s > 0 ? (double)sent_at_run_end / run_s : 0;
    double deliv_rate = run_s > 0 ? (double)deliv_at_run_end / run_s : 0;
    double acked_rate = run_s > 0 ? (double)acked_at_run_end / run_s : 0;
    const uint64_t *c = fin.c;
    /* worker: assignments per second from the first conv.open to the last assignment */
    double assign_s = first_open && last_assign > first_open ? (double)(last_assign - first_open) / 1e9 : 0;
    double assign_rate = assign_s > 0 ? (double)c[KC_convs_assigned] / assign_s : 0;

    int failed = c[KC_conn_fail] || c[KC_disconnects] || c[KC_lost] || c[KC_duplicated] ||
                 c[KC_unacked] || c[KC_failed] || c[KC_journeys_failed] || c[KC_resume_missing] ||
                 c[KC_bad_frames] || c[KC_step_timeouts] || c[KC_server_dups] || c[KC_never_assigned];
    for (int i = 0; i < O.procs; i++)
        if (!(WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0)) failed = 1;
    if (O.scenario == SC_IDLE && c[KC_conn_ok] < (uint64_t)O.conns) failed = 1;
    if (O.scenario == SC_RELAY && c[KC_convs_accepted] < (uint64_t)O.pairs) failed = 1;
    if (O.scenario == SC_JOURNEY && c[KC_journeys_done] == 0) failed = 1;
    if (O.scenario == SC_WORKER &&
        (c[KC_convs_opened] < (uint64_t)O.customers || c[KC_convs_assigned] < c[KC_convs_opened]))
        failed = 1;

    printf("\n== kefu-load %s, run %s: %s ==\n", names[O.scenario], O.run_id, failed ? "FAILED" : "ok");
    printf("connections: %llu ok, %llu failed (socket %llu, connect %llu, upgrade %llu, auth %llu, "
           "closed %llu), %llu dropped by the server; %.0f connections+auth/s over %.2f s\n",
           (unsigned long long)c[KC_conn_ok], (unsigned long long)c[KC_conn_fail],
           (unsigned long long)c[KC_conn_fail_socket], (unsigned long long)c[KC_conn_fail_connect],
           (unsigned long long)c[KC_conn_fail_upgrade], (unsigned long long)c[KC_conn_fail_auth],
           (unsigned long long)c[KC_conn_fail_closed], (unsigned long long)c[KC_disconnects],
           conn_rate, setup_s);
    if (O.scenario == SC_RELAY)
        printf("messages: %llu sent, %llu acked, %llu delivered live, %llu healed by history, "
               "%llu never seen, %llu duplicated, %llu unacked, %llu failed, %llu out of order; "
               "%llu gaps, %llu resync notices; run %.2f s: %.0f sent/s, %.0f acked/s, "
               "%.0f delivered/s\n",
               (unsigned long long)c[KC_sent], (unsigned long long)c[KC_acked],
               (unsigned long long)c[KC_delivered], (unsigned long long)c[KC_healed],
               (unsigned long long)c[KC_lost], (unsigned long long)c[KC_duplicated],
               (unsigned long long)c[KC_unacked], (unsigned long long)c[KC_failed],
               (unsigned long long)c[KC_out_of_order], (unsigned long long)c[KC_gaps],
               (unsigned long long)c[KC_resyncs], run_s, sent_rate, acked_rate, deliv_rate);
    if (O.scenario == SC_JOURNEY)
        printf("journeys: %llu started, %llu done, %llu failed; %llu reconnects, %llu history calls "
               "(%llu msgs), %llu replies missing after resume, %llu duplicated; %llu msgs sent, %llu "
               "delivered; %llu accept conflicts, %llu step timeouts\n",
               (unsigned long long)c[KC_journeys_started], (unsigned long long)c[KC_journeys_done],
               (unsigned long long)c[KC_journeys_failed], (unsigned long long)c[KC_reconnects],
               (unsigned long long)c[KC_history_calls], (unsigned long long)c[KC_history_msgs],
               (unsigned long long)c[KC_resume_missing], (unsigned long long)c[KC_duplicated],
               (unsigned long long)c[KC_sent], (unsigned long long)c[KC_delivered],
               (unsigned long long)c[KC_accept_conflicts], (unsigned long long)c[KC_step_timeouts]);
    if (O.scenario == SC_WORKER)
        printf("assignment: %llu opened, %llu assigned, %llu never assigned within %.1f s, %llu "
               "unanswered opens, %llu failed; %llu closed by agents at capacity, %llu assignments "
               "of other conversations; %.1f assigned/s over %.2f s\n",
               (unsigned long long)c[KC_convs_opened], (unsigned long long)c[KC_convs_assigned],
               (unsigned long long)c[KC_never_assigned], O.drain_s, (unsigned long long)c[KC_unacked],
               (unsigned long long)c[KC_failed], (unsigned long long)c[KC_convs_closed],
               (unsigned long long)c[KC_foreign_assigned], assign_rate, assign_s);
    if (O.scenario == SC_IDLE)
        printf("pings: %llu sent, %llu answered\n", (unsigned long long)c[KC_pings],
               (unsigned long long)c[KC_pongs]);
    printf("%-9s %10s %9s %9s %9s %9s %9s %9s %9s\n", "latency", "count", "min", "mean", "p50", "p90",
           "p99", "p99.9", "max");
    for (int h = 0; h < KH__COUNT; h++) {
        const kl_hist *x = &fin.h[h];
        if (!x->count) continue;
        printf("%-9s %10llu %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f ms\n", kl_hist_names[h],
               (unsigned long long)x->count, ms(x->min), (double)x->sum / (double)x->count / 1e6,
               ms(kl_hist_quantile(x, 0.5)), ms(kl_hist_quantile(x, 0.9)),
               ms(kl_hist_quantile(x, 0.99)), ms(kl_hist_quantile(x, 0.999)), ms(x->max));
    }
    int any_err = 0;
    for (int i = 0; i < O.procs; i++)
        if (sh->slot[i].last_error[0]) {
            if (!any_err++) printf("first failures:\n");
            printf("  worker %d: %s\n", i, sh->slot[i].last_error);
        }

    if (O.json_path) {
        json_t *root = json_object();
        json_object_set_new(root, "tool", json_string("kefu-load"));
        json_object_set_new(root, "scenario", json_string(names[O.scenario]));
        json_object_set_new(root, "run_id", json_string(O.run_id));
        json_object_set_new(root, "ok", json_boolean(!failed));
        json_object_set_new(root, "started_unix", json_integer((json_int_t)time(NULL) - (json_int_t)((kl_now_ns() - t_start) / 1000000000)));
        json_t *urls = json_array();
        for (int i = 0; i < O.nurls; i++) json_array_append_new(urls, json_string(O.urls[i]));
        json_t *opts = json_pack("{s:o, s:s, s:s, s:i, s:i, s:f, s:f, s:i, s:f}", "urls", urls,
                                 "format", O.msgpack ? "msgpack" : "json", "auth",
                                 O.auth_url ? "url" : "hello", "procs", O.procs, "src_ips", O.src_ips,
                                 "duration_s", O.duration_s, "connect_rate", O.connect_rate,
                                 "inflight", O.inflight, "drain_s", O.drain_s);
        if (O.scenario == SC_IDLE)
            json_object_update_new(opts, json_pack("{s:I, s:f}", "conns", (json_int_t)O.conns,
                                                   "ping_interval_s", O.ping_interval_s));
        else if (O.scenario == SC_RELAY)
            json_object_update_new(opts, json_pack("{s:I, s:f, s:i, s:b}", "pairs", (json_int_t)O.pairs,
                                                   "rate", O.rate, "size", O.size, "both", O.both));
        else if (O.scenario == SC_WORKER)
            json_object_update_new(opts, json_pack("{s:I, s:I, s:f, s:i}", "customers",
                                                   (json_int_t)O.customers, "agents", (json_int_t)O.agents,
                                                   "rate", O.rate, "max_chats", O.max_chats));
        else
            json_object_update_new(opts, json_pack("{s:I, s:I, s:i, s:i, s:i, s:i}", "customers",
                                                   (json_int_t)O.customers, "agents", (json_int_t)O.agents,
                                                   "msgs", O.msgs, "think_ms", O.think_ms,
                                                   "reconnect_pct", O.reconnect_pct, "agent_chats",
                                                   O.agent_chats));
        json_object_set_new(root, "options", opts);
        json_t *cj = json_object();
        for (int k = 0; k < KC__COUNT; k++) json_object_set_new(cj, kl_counter_names[k], json_integer((json_int_t)c[k]));
        json_object_set_new(root, "counters", cj);
        json_object_set_new(root, "rates",
                            json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "connect_per_s",
                                      conn_rate, "setup_s", setup_s, "run_s", run_s, "sent_per_s",
                                      sent_rate, "acked_per_s", acked_rate, "delivered_per_s",
                                      deliv_rate, "assigned_per_s", assign_rate, "assign_s", assign_s));
        json_t *lat = json_object();
        for (int h = 0; h < KH__COUNT; h++)
            if (fin.h[h].count) json_object_set_new(lat, kl_hist_names[h], hist_json(&fin.h[h]));
        json_object_set_new(root, "latency_us", lat);
        json_t *tl = json_array();
        for (size_t i = 0; i < nrows; i++) {
            const row *r = &rows[i];
            json_t *o = json_pack("{s:f, s:s, s:I, s:f, s:f, s:f, s:f}", "t", r->t, "phase",
                                  phase_names[r->phase], "open", (json_int_t)r->open, "connect_per_s",
                                  r->conn_rate, "sent_per_s", r->sent_rate, "acked_per_s", r->acked_rate,
                                  "delivered_per_s", r->deliv_rate);
            for (int h = 0; h < KH__COUNT; h++)
                if (r->n[h])
                    json_object_set_new(o, kl_hist_names[h],
                                        json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)r->n[h],
                                                  "p50", r->q[h][0] / 1e3, "p90", r->q[h][1] / 1e3,
                                                  "p99", r->q[h][2] / 1e3, "p999", r->q[h][3] / 1e3,
                                                  "max", r->q[h][4] / 1e3));
            json_array_append_new(tl, o);
        }
        json_object_set_new(root, "timeline", tl);
        json_t *errs = json_array();
        for (int i = 0; i < O.procs; i++)
            if (sh->slot[i].last_error[0]) json_array_append_new(errs, json_string(sh->slot[i].last_error));
        json_object_set_new(root, "first_failures", errs);
        if (json_dump_file(root, O.json_path, JSON_INDENT(1)) < 0)
            fprintf(stderr, "kefu-load: cannot write %s\n", O.json_path);
        json_decref(root);
    }
    if (O.plot_prefix) write_plot(O.plot_prefix, rows, nrows, &fin);
    kf_free(rows);
    munmap(sh, shsize);
    return failed ? 1 : 0;
}
