/* kefu-bot: loads a bot rule directory and runs it on transcripts, printing what the bot does;
 * the bot authors' test tool (and CI's: the exit status says what went wrong). */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "kefu/alloc.h"
#include "kefu/bot.h"
#include "kefu/log.h"

enum { EXIT_OK = 0, EXIT_LOAD = 1, EXIT_USAGE = 2, EXIT_RULE = 3, EXIT_EXPECT = 4 };

static const char usage_text[] =
    "usage: kefu-bot [options] RULE_DIR [TRANSCRIPT...]\n"
    "Loads every *.lua file of RULE_DIR and runs each transcript (- or none: standard input),\n"
    "printing the bot's actions. A transcript has one customer message per line; lines starting\n"
    "with '#' are comments, and these directives steer the simulation:\n"
    "  @at YYYY-MM-DD HH:MM[:SS]  set the clock                @sleep SECONDS  move the clock\n"
    "  @open [topic]              open a new conversation (the first message opens one anyway)\n"
    "  @wait SECONDS              move the clock while queued; queue_wait handlers fire\n"
    "  @no_agent                  the no_agent event           @set FIELD VALUE  channel, group,\n"
    "                                                            level, customer_name, topic\n"
    "  @expect TEXT               the last event's output contains TEXT (else exit 4)\n"
    "  @expect-not TEXT           ... does not contain TEXT    @state  print the saved state\n"
    "options:\n"
    "  --check                 load the rules only; report the first error (exit 1)\n"
    "  --at TIME               start clock, \"YYYY-MM-DD HH:MM\" or @unix (default: now)\n"
    "  --tz ZONE               zone of calendars that name none (default: local); times given\n"
    "                          and printed are in the calendar's zone\n"
    "  --channel C, --group G, --level N, --name NAME, --topic T   the conversation's facts\n"
    "  --instructions N        per-event instruction budget (default 200000)\n"
    "  --memory-kb N           memory cap of the rule set (default 16384)\n"
    "  --json                  one JSON object per event instead of text\n"
    "  -q, --quiet             print only failures\n"
    "exit status: 0 ok, 1 the rules do not load, 2 usage or I/O error, 3 a rule failed while\n"
    "running (error, budget or memory), 4 an @expect did not hold\n";

static struct {
    int check, json, quiet;
    const char *tz;
    kf_bot_config cfg;
} O;

/* The simulated conversation: what the gateway would keep in Redis. */
typedef struct sim {
    char id[32], ticket[96], channel[32], group[40], priority[16], category[24], topic[256];
    char name[128], tags[512];
    int level;
    enum { PH_NONE, PH_BOT, PH_WAITING, PH_CLOSED } phase;
    char *state;
    size_t state_len;
    int64_t now_ms, queued_ms;
    long long waited_fired;
    int seq;
    /* output of the last event, for @expect */
    char *out;
    size_t out_len, out_cap;
    int rule_failures, expect_failures;
} sim;

static void out_add(sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_add(sim *s, const char *fmt, ...) {
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t l = strlen(line);
    if (s->out_len + l + 2 > s->out_cap) {
        s->out_cap = (s->out_len + l + 2) * 2;
        s->out = kf_realloc(s->out, s->out_cap);
    }
    memcpy(s->out + s->out_len, line, l);
    s->out_len += l;
    s->out[s->out_len++] = '\n';
    s->out[s->out_len] = '\0';
    if (!O.quiet && !O.json) printf("%s\n", line);
}

static kf_bot *the_bot;

static void clock_text(int64_t ms, char *buf, size_t len) {
    kf_bot_strftime(the_bot, buf, len, "%Y-%m-%d %H:%M %a", ms / 1000);
}

static void tags_add(sim *s, const char *t) {
    size_t l = strlen(s->tags);
    if (l + strlen(t) + 2 > sizeof(s->tags)) return;
    snprintf(s->tags + l, sizeof(s->tags) - l, "%s%s", l ? "," : "", t);
}

/* Runs one event and applies its actions to the simulation like the gateway does. */
static void run_event(kf_bot *b, sim *s, kf_bot_event_type type, const char *text, long long waited) {
    kf_bot_event ev = {
        .type = type,
        .now_ms = s->now_ms,
        .text = text,
        .text_len = text ? strlen(text) : 0,
        .waited_s = waited,
        .conv = {s->id, s->ticket, s->channel, s->topic, "customer-1", s->name, s->group,
                 s->priority, s->category, s->tags, s->level},
        .state = s->state,
        .state_len = s->state_len,
    };
    kf_bot_result r;
    s->out_len = 0;
    if (s->out) s->out[0] = '\0';
    char when[64];
    clock_text(s->now_ms, when, sizeof(when));
    if (type == KF_BOT_MESSAGE) out_add(s, "> %s", text);
    else if (type == KF_BOT_QUEUE_WAIT) out_add(s, "[%s] queue_wait %llds", when, waited);
    else out_add(s, "[%s] %s", when, kf_bot_event_name(type));
    kf_bot_run(b, &ev, &r);
    json_t *jacts = O.json ? json_array() : NULL;
    if (r.ran & (1u << KF_BOT_OFF_HOURS)) out_add(s, "  (off hours)");
    if (r.failure) {
        static const char *const kinds[] = {"", "error", "budget", "memory"};
        out_add(s, "  RULE FAILED (%s): %s", kinds[r.failure], r.error);
        s->rule_failures++;
    }
    for (size_t i = 0; i < r.nacts; i++) {
        const kf_bot_action *a = &r.acts[i];
        if (jacts) {
            json_t *o = json_pack("{s:s}", "kind", kf_bot_action_name(a->kind));
            if (a->key) json_object_set_new(o, "key", json_string(a->key));
            if (a->value) json_object_set_new(o, "value", json_string(a->value));
            json_array_append_new(jacts, o);
        }
        switch (a->kind) {
        case KF_BOT_ACT_REPLY: {
            /* continuation lines indented under the first */
            char ind[8192];
            size_t o = 0;
            for (const char *p = a->value; *p && o < sizeof(ind) - 8; p++) {
                ind[o++] = *p;
                if (*p == '\n') memcpy(ind + o, "       ", 7), o += 7;
            }
            ind[o] = '\0';
            out_add(s, "  bot: %s", ind);
            break;
        }
        case KF_BOT_ACT_SET:
            out_add(s, "  set %s = %s", a->key, a->value);
            if (!strcmp(a->key, "priority")) snprintf(s->priority, sizeof(s->priority), "%s", a->value);
            if (!strcmp(a->key, "category")) snprintf(s->category, sizeof(s->category), "%s", a->value);
            if (!strcmp(a->key, "group")) snprintf(s->group, sizeof(s->group), "%s", a->value);
            break;
        case KF_BOT_ACT_TAG:
            out_add(s, "  tag %s", a->value);
            tags_add(s, a->value);
            break;
        case KF_BOT_ACT_SENSITIVE: out_add(s, "  sensitive: %s (supervisors alerted)", a->value); break;
        case KF_BOT_ACT_HANDOFF:
            if (s->phase == PH_BOT) {
                out_add(s, "  handoff: %s (queued in group %s)", a->key ? a->key : "", s->group);
                s->phase = PH_WAITING;
                s->queued_ms = s->now_ms;
                s->waited_fired = 0;
            }
            break;
        case KF_BOT_ACT_FINISH:
            out_add(s, "  finish: %s (conversation closed)", a->value);
            s->phase = PH_CLOSED;
            break;
        }
    }
    if (jacts) {
        json_t *o = json_pack("{s:s, s:I, s:o}", "event", kf_bot_event_name(type), "now",
                              (json_int_t)(s->now_ms / 1000), "actions", jacts);
        if (text) json_object_set_new(o, "text", json_string(text));
        if (type == KF_BOT_QUEUE_WAIT) json_object_set_new(o, "waited", json_integer(waited));
        if (r.ran & (1u << KF_BOT_OFF_HOURS)) json_object_set_new(o, "off_hours", json_true());
        if (r.failure) json_object_set_new(o, "error", json_string(r.error));
        char *txt = json_dumps(o, JSON_COMPACT);
        if (!O.quiet || r.failure) printf("%s\n", txt);
        free(txt);
        json_decref(o);
    } else if (O.quiet && r.failure) {
        fputs(s->out, stdout);
    }
    kf_free(s->state);
    s->state = r.state;
    s->state_len = r.state_len;
    r.state = NULL;
    kf_bot_result_free(&r);
}

static void sim_open(kf_bot *b, sim *s, const char *topic) {
    s->seq++;
    snprintf(s->id, sizeof(s->id), "sim%06d", s->seq);
    char day[16];
    kf_bot_strftime(b, day, sizeof(day), "%Y%m%d", s->now_ms / 1000);
    char up[32];
    size_t i;
    for (i = 0; s->channel[i] && i < sizeof(up) - 1; i++)
        up[i] = (char)(s->channel[i] >= 'a' && s->channel[i] <= 'z' ? s->channel[i] - 32 : s->channel[i]);
    up[i] = '\0';
    snprintf(s->ticket, sizeof(s->ticket), "%s-%s-%03d", up, day, s->seq);
    if (topic) snprintf(s->topic, sizeof(s->topic), "%s", topic);
    s->priority[0] = s->category[0] = s->tags[0] = '\0';
    kf_free(s->state);
    s->state = NULL;
    s->state_len = 0;
    s->phase = PH_BOT;
    if (!O.json && !O.quiet) printf("--- conversation %s (%s)\n", s->id, s->ticket);
    run_event(b, s, KF_BOT_OPENED, NULL, 0);
}

/* Moves the clock; while queued, fires queue_wait at each declared threshold crossed. */
static void sim_wait(kf_bot *b, sim *s, long long secs, int events) {
    int64_t end = s->now_ms + secs * 1000;
    if (events && s->phase == PH_WAITING) {
        const long long *w;
        size_t nw = kf_bot_queue_waits(b, &w);
        for (size_t i = 0; i < nw; i++) {
            int64_t at = s->queued_ms + w[i] * 1000;
            if (w[i] <= s->waited_fired || at > end) continue;
            s->now_ms = at;
            s->waited_fired = w[i];
            run_event(b, s, KF_BOT_QUEUE_WAIT, NULL, w[i]);
            if (s->phase != PH_WAITING) break;
        }
    }
    s->now_ms = end;
}

static void state_print(sim *s) {
    printf("  state: %zu bytes msgpack:", s->state_len);
    for (size_t i = 0; i < s->state_len && i < 64; i++) printf(" %02x", (unsigned char)s->state[i]);
    printf("%s\n", s->state_len > 64 ? " ..." : "");
}

static int run_transcript(kf_bot *b, FILE *f, const char *fname, sim *s) {
    char line[16384];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (lineno == 1 && !strncmp(line, "\xEF\xBB\xBF", 3)) memmove(line, line + 3, strlen(line + 3) + 1);
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = '\0';
        if (!l || line[0] == '#') continue;
        if (line[0] != '@') {
            if (s->phase == PH_NONE || s->phase == PH_CLOSED) sim_open(b, s, NULL);
            if (s->phase == PH_BOT) {
                run_event(b, s, KF_BOT_MESSAGE, line, 0);
            } else {
                s->out_len = 0;
                if (s->out) s->out[0] = '\0';
                out_add(s, "> %s", line);
                out_add(s, "  (queued for a human: the bot does not answer)");
            }
            continue;
        }
        char *arg = strchr(line, ' ');
        if (arg) *arg++ = '\0';
        else arg = line + l;
        while (*arg == ' ') arg++;
        const char *d = line + 1;
        if (!strcmp(d, "at")) {
            int64_t t;
            if (kf_bot_parse_time(arg, O.tz ? O.tz : kf_bot_timezone(b), &t) < 0) {
                fprintf(stderr, "%s:%d: @at wants YYYY-MM-DD HH:MM[:SS]\n", fname, lineno);
                return EXIT_USAGE;
            }
            s->now_ms = t * 1000;
        } else if (!strcmp(d, "sleep") || !strcmp(d, "wait")) {
            char *e;
            long long n = strtoll(arg, &e, 10);
            if (e == arg || n < 0) {
                fprintf(stderr, "%s:%d: @%s wants seconds\n", fname, lineno, d);
                return EXIT_USAGE;
            }
            sim_wait(b, s, n, d[0] == 'w');
        } else if (!strcmp(d, "open")) {
            sim_open(b, s, *arg ? arg : NULL);
        } else if (!strcmp(d, "no_agent")) {
            if (s->phase == PH_NONE) sim_open(b, s, NULL);
            run_event(b, s, KF_BOT_NO_AGENT, NULL, 0);
        } else if (!strcmp(d, "set")) {
            char *v = strchr(arg, ' ');
            if (!v) {
                fprintf(stderr, "%s:%d: @set FIELD VALUE\n", fname, lineno);
                return EXIT_USAGE;
            }
            *v++ = '\0';
            if (!strcmp(arg, "channel")) snprintf(s->channel, sizeof(s->channel), "%s", v);
            else if (!strcmp(arg, "group")) snprintf(s->group, sizeof(s->group), "%s", v);
            else if (!strcmp(arg, "level")) s->level = atoi(v);
            else if (!strcmp(arg, "customer_name")) snprintf(s->name, sizeof(s->name), "%s", v);
            else if (!strcmp(arg, "topic")) snprintf(s->topic, sizeof(s->topic), "%s", v);
            else {
                fprintf(stderr, "%s:%d: @set knows channel, group, level, customer_name, topic\n", fname, lineno);
                return EXIT_USAGE;
            }
        } else if (!strcmp(d, "expect") || !strcmp(d, "expect-not")) {
            int want = d[6] == '\0';
            int has = s->out && strstr(s->out, arg) != NULL;
            if (has != want) {
                s->expect_failures++;
                fprintf(O.json ? stderr : stdout, "%s:%d: EXPECT FAILED: output %s \"%s\"; it was:\n%s",
                        fname, lineno, want ? "lacks" : "contains", arg, s->out ? s->out : "(nothing)\n");
            }
        } else if (!strcmp(d, "state")) {
            state_print(s);
        } else {
            fprintf(stderr, "%s:%d: unknown directive @%s\n", fname, lineno, d);
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

static long long num(const char *what, const char *s, long long lo, long long hi) {
    char *e;
    long long v = strtoll(s, &e, 10);
    if (e == s || *e || v < lo || v > hi) {
        fprintf(stderr, "kefu-bot: %s must be an integer in %lld..%lld\n", what, lo, hi);
        exit(EXIT_USAGE);
    }
    return v;
}

int main(int argc, char **argv) {
    enum { OPT_CHECK = 256, OPT_AT, OPT_TZ, OPT_CHANNEL, OPT_GROUP, OPT_LEVEL, OPT_NAME, OPT_TOPIC,
           OPT_INSTR, OPT_MEM, OPT_JSON };
    static const struct option longopts[] = {
        {"check", no_argument, NULL, OPT_CHECK},       {"at", required_argument, NULL, OPT_AT},
        {"tz", required_argument, NULL, OPT_TZ},       {"channel", required_argument, NULL, OPT_CHANNEL},
        {"group", required_argument, NULL, OPT_GROUP}, {"level", required_argument, NULL, OPT_LEVEL},
        {"name", required_argument, NULL, OPT_NAME},   {"topic", required_argument, NULL, OPT_TOPIC},
        {"instructions", required_argument, NULL, OPT_INSTR},
        {"memory-kb", required_argument, NULL, OPT_MEM},
        {"json", no_argument, NULL, OPT_JSON},         {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0}};
    sim s;
    memset(&s, 0, sizeof(s));
    snprintf(s.channel, sizeof(s.channel), "web");
    snprintf(s.group, sizeof(s.group), "default");
    snprintf(s.name, sizeof(s.name), "Customer");
    s.now_ms = (int64_t)time(NULL) * 1000;
    const char *at = NULL;
    kf_log_level = KF_LOG_WARN;
    int c;
    while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CHECK: O.check = 1; break;
        case OPT_AT: at = optarg; break;
        case OPT_TZ: O.tz = optarg; break;
        case OPT_CHANNEL: snprintf(s.channel, sizeof(s.channel), "%s", optarg); break;
        case OPT_GROUP: snprintf(s.group, sizeof(s.group), "%s", optarg); break;
        case OPT_LEVEL: s.level = (int)num("--level", optarg, 0, 100); break;
        case OPT_NAME: snprintf(s.name, sizeof(s.name), "%s", optarg); break;
        case OPT_TOPIC: snprintf(s.topic, sizeof(s.topic), "%s", optarg); break;
        case OPT_INSTR: O.cfg.instructions = num("--instructions", optarg, 1000, 1000000000); break;
        case OPT_MEM: O.cfg.memory_bytes = (size_t)num("--memory-kb", optarg, 256, 4194304) << 10; break;
        case OPT_JSON: O.json = 1; break;
        case 'q': O.quiet = 1; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    O.cfg.timezone = O.tz;
    const char *dir = argv[optind++];
    char err[1024];
    kf_bot *b = kf_bot_load(dir, &O.cfg, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "kefu-bot: %s\n", err);
        return EXIT_LOAD;
    }
    the_bot = b;
    O.tz = NULL; /* from now on times are read in the calendar's zone */
    if (at) {
        int64_t t;
        if (kf_bot_parse_time(at, kf_bot_timezone(b), &t) < 0) {
            fprintf(stderr, "kefu-bot: --at wants \"YYYY-MM-DD HH:MM[:SS]\" or @unix\n");
            kf_bot_free(b);
            return EXIT_USAGE;
        }
        s.now_ms = t * 1000;
    }
    if (O.check) {
        if (!O.quiet)
            printf("%s: ok (%d files, bot \"%s\")\n", dir, kf_bot_nfiles(b), kf_bot_name(b));
        kf_bot_free(b);
        return EXIT_OK;
    }
    int rc = EXIT_OK;
    if (optind == argc) {
        rc = run_transcript(b, stdin, "-", &s);
    } else {
        for (; optind < argc && rc == EXIT_OK; optind++) {
            const char *fn = argv[optind];
            FILE *f = strcmp(fn, "-") ? fopen(fn, "r") : stdin;
            if (!f) {
                fprintf(stderr, "kefu-bot: cannot open %s\n", fn);
                rc = EXIT_USAGE;
                break;
            }
            s.phase = PH_NONE;
            rc = run_transcript(b, f, fn, &s);
            if (f != stdin) fclose(f);
        }
    }
    kf_bot_free(b);
    kf_free(s.state);
    kf_free(s.out);
    if (rc != EXIT_OK) return rc;
    if (s.rule_failures) return EXIT_RULE;
    if (s.expect_failures) return EXIT_EXPECT;
    return EXIT_OK;
}
