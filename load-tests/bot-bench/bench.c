/* kefu-bot-bench: how long one bot event takes (kf_bot_run: normalization, keyword scan, Lua
 * dispatch, state decode and encode) on generated rule sets of N FAQ entries, written as one
 * faq table or as N separate rules, and on any rule directory. Prints percentiles. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kefu/alloc.h"
#include "kefu/bot.h"
#include "kefu/log.h"

static const char *const zh_chars[] = {"退", "货", "款", "发", "票", "物", "流", "快", "递", "运",
                                       "费", "会", "员", "积", "分", "优", "惠", "券", "尺", "码",
                                       "颜", "色", "保", "修", "售", "后", "地", "址", "支", "付",
                                       "订", "单", "商", "品", "质", "量", "价", "格", "库", "存"};
#define NZH (sizeof(zh_chars) / sizeof(zh_chars[0]))

static unsigned long long rng = 88172645463325252ull;
static unsigned rnd(unsigned n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

typedef struct {
    char kw[4][48];
} entry;

static void make_entries(entry *e, int n) {
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) { /* two Chinese keywords of 2-3 characters */
            e[i].kw[k][0] = '\0';
            int len = 2 + (int)rnd(2);
            for (int c = 0; c < len; c++) strcat(e[i].kw[k], zh_chars[rnd(NZH)]);
        }
        for (int k = 2; k < 4; k++) { /* two English words of 5-8 letters, unique by index */
            int len = 5 + (int)rnd(4);
            for (int c = 0; c < len; c++) e[i].kw[k][c] = (char)('a' + rnd(26));
            snprintf(e[i].kw[k] + len, sizeof(e[i].kw[k]) - (size_t)len, "%c%c", 'a' + i % 26, 'a' + i / 26 % 26);
        }
    }
}

/* style 0: one faq table; style 1: N rule{} declarations. Plus a greeting and a fallback. */
static void write_rules(const char *dir, const entry *e, int n, int style) {
    mkdir(dir, 0700);
    char path[512];
    snprintf(path, sizeof(path), "%s/10_bench.lua", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fprintf(f, "bot { name = 'bench' }\non('opened', 'hello')\n");
    fprintf(f, "rule { name = 'human', keywords = {'人工', 'human'}, reply = 'transferring', handoff = true }\n");
    if (style == 0) fprintf(f, "faq {\n");
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s{ %s = { '%s', '%s', '%s', '%s*' }, %s = '答案 %d: 请在我的订单中查看，感谢您的耐心。Answer %d.' }%s\n",
                style == 0 ? "  " : "rule ", style == 0 ? "q" : "keywords", e[i].kw[0], e[i].kw[1],
                e[i].kw[2], e[i].kw[3], style == 0 ? "a" : "reply", i, i, style == 0 ? "," : "");
    }
    if (style == 0) fprintf(f, "}\n");
    fprintf(f, "on('message', function(c, text)\n"
               "  c.state.misses = (c.state.misses or 0) + 1\n"
               "  c:reply('抱歉，我没有理解。Sorry, I did not get that.')\n"
               "end)\n");
    fclose(f);
}

static const char *const zh_fill[] = {"请问一下，", "你好，我想问", "那个", "麻烦问下"};
static const char *const zh_tail[] = {"怎么弄呢？", "是怎么回事", "要多久", "可以吗，谢谢"};
static const char *const en_fill[] = {"hi, how does ", "hello, what about ", "can you tell me about ",
                                      "is there any "};
static const char *const en_tail[] = {" for my order?", " please", " today?", " again"};

/* 70 % mention a keyword, 30 % match nothing. */
static void make_message(char *out, size_t len, const entry *e, int n) {
    int zh = rnd(2) == 0, hit = rnd(10) < 7;
    const char *kw = "";
    if (hit) kw = e[rnd((unsigned)n)].kw[zh ? rnd(2) : 2 + rnd(2)];
    if (zh)
        snprintf(out, len, "%s%s%s", zh_fill[rnd(4)], hit ? kw : "这个东西", zh_tail[rnd(4)]);
    else
        snprintf(out, len, "%s%s%s", en_fill[rnd(4)], hit ? kw : "the weather", en_tail[rnd(4)]);
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Runs iterations message events (a new conversation every 20 messages, state carried) and
 * prints one result line. */
static void bench(const char *label, const char *dir, const char *const *msgs, int nmsgs, long iterations) {
    char err[1024];
    kf_bot *b = kf_bot_load(dir, NULL, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "kefu-bot-bench: %s\n", err);
        exit(1);
    }
    long long *lat = kf_malloc((size_t)iterations * sizeof(long long));
    char *state = NULL;
    size_t state_len = 0;
    long replies = 0, fails = 0;
    int64_t clock_ms = 1795395600000LL; /* 2026-11-23 10:00 China time */
    for (long i = -2000; i < iterations; i++) { /* the first 2000 warm up */
        kf_bot_event ev = {.now_ms = clock_ms,
                           .conv = {.id = "bench", .channel = "web", .customer = "u", .group = "default"},
                           .state = state,
                           .state_len = state_len};
        kf_bot_result r;
        if ((i + 2000) % 20 == 0) { /* a new conversation: opened (not timed) */
            free(state);
            state = NULL;
            state_len = 0;
            ev.type = KF_BOT_OPENED;
            ev.state = NULL;
            ev.state_len = 0;
            kf_bot_run(b, &ev, &r);
            state = r.state, state_len = r.state_len, r.state = NULL;
            kf_bot_result_free(&r);
            ev.state = state;
            ev.state_len = state_len;
        }
        const char *m = msgs[(i + 2000) % nmsgs];
        ev.type = KF_BOT_MESSAGE;
        ev.text = m;
        ev.text_len = strlen(m);
        long long t0 = now_ns();
        int rc = kf_bot_run(b, &ev, &r);
        long long t1 = now_ns();
        if (i >= 0) {
            lat[i] = t1 - t0;
            fails += rc < 0;
            for (size_t k = 0; k < r.nacts; k++)
                replies += r.acts[k].kind == KF_BOT_ACT_REPLY && !strncmp(r.acts[k].value, "答案", 6);
        }
        free(state);
        state = r.state, state_len = r.state_len, r.state = NULL;
        kf_bot_result_free(&r);
    }
    kf_bot_stats st;
    kf_bot_get_stats(b, &st);
    qsort(lat, (size_t)iterations, sizeof(long long), cmp_ll);
    double sum = 0;
    for (long i = 0; i < iterations; i++) sum += (double)lat[i];
#define P(q) (lat[(long)((double)(iterations - 1) * (q))] / 1000.0)
    printf("%-34s %8.2f %8.2f %8.2f %8.2f %8.2f %9.0f %6.1f %9zu\n", label, P(0.5), P(0.9), P(0.99),
           sum / (double)iterations / 1000.0, lat[iterations - 1] / 1000.0,
           1e9 / (sum / (double)iterations), 100.0 * (double)replies / (double)iterations,
           st.memory_bytes >> 10);
    if (fails) printf("  (%ld events failed)\n", fails);
    free(state);
    kf_free(lat);
    kf_bot_free(b);
}

int main(int argc, char **argv) {
    int nfaq = 100;
    long iterations = 200000;
    const char *rules = NULL;
    static const struct option longopts[] = {{"faq", required_argument, NULL, 'n'},
                                             {"iterations", required_argument, NULL, 'i'},
                                             {"rules", required_argument, NULL, 'r'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': nfaq = atoi(optarg); break;
        case 'i': iterations = atol(optarg); break;
        case 'r': rules = optarg; break;
        default:
            printf("usage: kefu-bot-bench [--faq N (100)] [--iterations N (200000)] [--rules DIR]\n"
                   "Times kf_bot_run on message events: generated rule sets with N FAQ entries\n"
                   "(one faq table; N rule declarations), and DIR when given.\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (nfaq < 1 || nfaq > 100000 || iterations < 100) {
        fprintf(stderr, "kefu-bot-bench: bad --faq or --iterations\n");
        return 2;
    }
    kf_log_level = KF_LOG_WARN;
    entry *e = kf_calloc((size_t)nfaq, sizeof(entry));
    make_entries(e, nfaq);
    enum { NMSG = 1000 };
    char *msgs[NMSG];
    for (int i = 0; i < NMSG; i++) {
        msgs[i] = kf_malloc(256);
        make_message(msgs[i], 256, e, nfaq);
    }
    char base[] = "/tmp/kefu-bot-bench-XXXXXX";
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 2;
    }
    char d1[600], d2[600];
    snprintf(d1, sizeof(d1), "%s/faq", base);
    snprintf(d2, sizeof(d2), "%s/rules", base);
    write_rules(d1, e, nfaq, 0);
    write_rules(d2, e, nfaq, 1);
    printf("kf_bot_run per message event, %ld events (after 2000 warm-up), microseconds\n", iterations);
    printf("%-34s %8s %8s %8s %8s %8s %9s %6s %9s\n", "rule set", "median", "p90", "p99", "mean",
           "max", "events/s", "faq%", "heap KiB");
    char label[80];
    snprintf(label, sizeof(label), "%d FAQ entries, one faq table", nfaq);
    bench(label, d1, (const char *const *)msgs, NMSG, iterations);
    snprintf(label, sizeof(label), "%d FAQ entries, %d rule{}", nfaq, nfaq);
    bench(label, d2, (const char *const *)msgs, NMSG, iterations);
    if (rules) bench(rules, rules, (const char *const *)msgs, NMSG, iterations);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "kefu-bot-bench: could not remove %s\n", base);
    for (int i = 0; i < NMSG; i++) kf_free(msgs[i]);
    kf_free(e);
    return 0;
}
