/* kefu-token: mints HS256 access tokens for kefu, or verifies one and prints its claims. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "kefu/alloc.h"
#include "kefu/token.h"

#define DEV_SECRET "kefu-dev-secret-change-me"
#define MAX_SECRETS 16

static const char usage_text[] =
    "Usage: kefu-token --sub ID --role ROLE [options]   mint a token\n"
    "       kefu-token --verify TOKEN [--secret S]       check a token, print its claims\n"
    "\n"
    "  --sub ID          user id (1..128 bytes)\n"
    "  --role ROLE       customer | agent | supervisor | admin\n"
    "  --name NAME       display name (up to 128 bytes)\n"
    "  --channel CH      customer channel, [a-z0-9_-]{1,24}\n"
    "  --level N         customer tier 0..100\n"
    "  --skills A,B      agent skill groups, each [a-z0-9_-]{1,32}\n"
    "  --max-chats N     agent capacity 1..1000\n"
    "  --ttl SECONDS     lifetime (default 3600)\n"
    "  --secret S        signing secret (default: first of $KEFU_JWT_SECRETS, else the\n"
    "                    development secret, for gateways run with --dev-secret); with\n"
    "                    --verify, the only secret tried\n"
    "  --verify TOKEN    verify against --secret or every secret in $KEFU_JWT_SECRETS\n"
    "  -h, --help        show this help\n";

static void die_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "kefu-token: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'kefu-token --help'.\n");
    exit(2);
}

/* Parses a whole decimal integer in lo..hi or exits with status 2 naming the option. */
static long long parse_int(const char *opt, const char *s, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "kefu-token: %s must be an integer from %lld to %lld, got '%s'\n", opt, lo,
                hi, s);
        exit(2);
    }
    return v;
}

static void copy_field(const char *opt, char *dst, size_t cap, const char *s) {
    if (strlen(s) >= cap) {
        fprintf(stderr, "kefu-token: %s is longer than %zu bytes\n", opt, cap - 1);
        exit(2);
    }
    strcpy(dst, s);
}

/* Splits a comma list into up to max non-empty entries pointing into the modified list. */
static size_t split_secrets(char *list, const char **out, size_t max) {
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n < max;
         tok = strtok_r(NULL, ",", &save))
        out[n++] = tok;
    return n;
}

static int skills_valid(const char *s) {
    size_t run = 0;
    for (;; s++) {
        if (*s == ',' || *s == '\0') {
            if (run == 0 || run > 32) return 0;
            if (*s == '\0') return 1;
            run = 0;
        } else if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-') {
            run++;
        } else {
            return 0;
        }
    }
}

static int verify(const char *token, const char **secrets, size_t nsecrets) {
    kf_claims c;
    kf_token_result r =
        kf_token_verify(token, strlen(token), secrets, nsecrets, (long long)time(NULL), 0, &c);
    if (r != KF_TOKEN_OK) {
        fprintf(stderr, "kefu-token: token rejected: %s\n", kf_token_result_str(r));
        return 1;
    }
    json_t *j = json_pack("{s:s, s:s, s:I}", "sub", c.sub, "role", kf_role_name(c.role), "exp",
                          (json_int_t)c.exp);
    if (c.name[0]) json_object_set_new(j, "name", json_string(c.name));
    if (c.channel[0]) json_object_set_new(j, "channel", json_string(c.channel));
    json_object_set_new(j, "level", json_integer(c.level));
    if (c.skills[0]) json_object_set_new(j, "skills", json_string(c.skills));
    if (c.max_chats) json_object_set_new(j, "max_chats", json_integer(c.max_chats));
    char *text = json_dumps(j, JSON_COMPACT);
    puts(text);
    free(text);
    json_decref(j);
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"sub", required_argument, NULL, 's'},
        {"role", required_argument, NULL, 'r'},
        {"name", required_argument, NULL, 'n'},
        {"channel", required_argument, NULL, 'c'},
        {"level", required_argument, NULL, 'l'},
        {"skills", required_argument, NULL, 'k'},
        {"max-chats", required_argument, NULL, 'm'},
        {"ttl", required_argument, NULL, 't'},
        {"secret", required_argument, NULL, 'S'},
        {"verify", required_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kf_claims c;
    long long ttl = 3600;
    const char *secret = NULL, *token = NULL;
    int opt;

    memset(&c, 0, sizeof(c));
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (opt) {
        case 's': copy_field("--sub", c.sub, sizeof(c.sub), optarg); break;
        case 'r':
            if ((c.role = kf_role_parse(optarg)) == KF_ROLE_NONE)
                die_usage("--role must be customer, agent, supervisor or admin, got '%s'", optarg);
            break;
        case 'n': copy_field("--name", c.name, sizeof(c.name), optarg); break;
        case 'c':
            if (!kf_channel_valid(optarg))
                die_usage("--channel must match [a-z0-9_-]{1,24}, got '%s'", optarg);
            strcpy(c.channel, optarg);
            break;
        case 'l': c.level = (int)parse_int("--level", optarg, 0, 100); break;
        case 'k': copy_field("--skills", c.skills, sizeof(c.skills), optarg); break;
        case 'm': c.max_chats = (int)parse_int("--max-chats", optarg, 1, 1000); break;
        case 't': ttl = parse_int("--ttl", optarg, 1, 10LL * 365 * 24 * 3600); break;
        case 'S':
            if (!optarg[0]) die_usage("--secret must not be empty%s", "");
            secret = optarg;
            break;
        case 'V': token = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case ':': die_usage("option '%s' needs a value", argv[optind - 1]); break;
        default: die_usage("unknown option '%s'", argv[optind - 1]); break;
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
    if (!token) {
        if (!c.sub[0]) die_usage("--sub is required%s", "");
        if (c.role == KF_ROLE_NONE) die_usage("--role is required%s", "");
        if (c.skills[0] && !skills_valid(c.skills))
            die_usage("--skills must be a comma list of [a-z0-9_-]{1,32} names, got '%s'",
                      c.skills);
    }

    const char *secrets[MAX_SECRETS];
    size_t nsecrets = 0;
    char *env = getenv("KEFU_JWT_SECRETS") ? kf_strdup(getenv("KEFU_JWT_SECRETS")) : NULL;
    if (secret) {
        secrets[nsecrets++] = secret;
    } else if (env && (nsecrets = split_secrets(env, secrets, MAX_SECRETS)) > 0) {
        secret = secrets[0];
    } else {
        fprintf(stderr, "kefu-token: warning: using the built-in development secret\n");
        secret = secrets[nsecrets++] = DEV_SECRET;
    }

    int rc;
    if (token) {
        rc = verify(token, secrets, nsecrets);
    } else {
        c.exp = (long long)time(NULL) + ttl;
        char *tok = kf_token_mint(secret, &c);
        if (!tok) {
            fprintf(stderr, "kefu-token: --sub and --name must be UTF-8 without control "
                            "characters\n");
            kf_free(env);
            return 2;
        }
        puts(tok);
        kf_free(tok);
        rc = 0;
    }
    kf_free(env);
    return rc;
}
