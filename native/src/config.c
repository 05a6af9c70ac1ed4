/* Reads the client settings of the reference ("Client configuration").
 *
 * The files are TOML; the client needs two keys from them, so it reads the subset those
 * keys use: [section] headers and `key = value` lines with a string, integer or boolean
 * value, '#' comments. Anything else in the file is ignored, not an error, because the
 * same file may carry settings for other tools. */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = 0;
    return s;
}

/* Value of [section] key in a TOML file, unquoted; 1 when found. */
static int toml_lookup(const char *path, const char *section, const char *key, char *out,
                       size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[1024], current[128] = "";
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *s = trim(line);
        if (*s == '#' || *s == 0)
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (end) {
                *end = 0;
                snprintf(current, sizeof current, "%s", trim(s + 1));
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq || strcmp(current, section) != 0)
            continue;
        *eq = 0;
        if (strcmp(trim(s), key) != 0)
            continue;
        char *value = trim(eq + 1);
        if (*value == '"' || *value == '\'') {
            char quote = *value++;
            char *end = strchr(value, quote);
            if (end)
                *end = 0;
        } else {
            char *comment = strchr(value, '#');
            if (comment)
                *comment = 0;
            value = trim(value);
        }
        snprintf(out, size, "%s", value);
        found = 1;
    }
    fclose(f);
    return found;
}

/* Environment first, then the user's file, then the system's. */
static int setting(const char *env, const char *section, const char *key, char *out, size_t size)
{
    const char *value = env ? getenv(env) : NULL;
    if (value && *value) {
        snprintf(out, size, "%s", value);
        return 1;
    }
    const char *home = getenv("HOME");
    char user[512];
    snprintf(user, sizeof user, "%s/.orion/client.toml", home ? home : "");
    return (home && toml_lookup(user, section, key, out, size)) ||
           toml_lookup("/etc/orion/client.toml", section, key, out, size);
}

static int parse_int(const char *text, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *trim(end) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int integer_env(orion_config *cfg, const char *env, long long min, long long max,
                       long long *out)
{
    const char *text = getenv(env);
    if (!text || !*text)
        return 0;
    if (parse_int(text, min, max, out) == 0)
        return 0;
    snprintf(cfg->error, sizeof cfg->error, "%s=%s is not a whole number in [%lld, %lld]",
             env, text, min, max);
    return -1;
}

int orion_config_load(orion_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (!setting("ORION_CONTROLLER", "controller", "controller_addr", cfg->controller,
                 sizeof cfg->controller))
        snprintf(cfg->controller, sizeof cfg->controller, "127.0.0.1:9123");
    char net[16] = "";
    setting("ORION_ENABLE_NET", "client", "enable_net", net, sizeof net);
    cfg->enable_net = strcmp(net, "true") == 0 || strcmp(net, "1") == 0;
    long long vgpu = 1, gmem = 0, ratio = 0;
    if (integer_env(cfg, "ORION_VGPU", 1, 64, &vgpu) ||
        integer_env(cfg, "ORION_GMEM", 1, 1LL << 40, &gmem) ||
        integer_env(cfg, "ORION_RATIO", 1, 100, &ratio))
        return -1;
    cfg->vgpu = (int)vgpu;
    cfg->gmem_mib = gmem;
    cfg->ratio = (int)ratio;
    /* the identity quotas are kept for: ORION_CLIENT_ID, else the login name */
    const char *id = getenv("ORION_CLIENT_ID");
    struct passwd *user = id && *id ? NULL : getpwuid(getuid());
    snprintf(cfg->client_id, sizeof cfg->client_id, "%s",
             id && *id ? id : user ? user->pw_name : "unknown");
    return 0;
}
