/* JSON requests to the controller and to oriond (docs/protocol.md, "Control plane"). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "control.h"
#include "orion.h"

#define CONTROL_TIMEOUT_MS 3000

/* "host:port" (the reference's style) or a full URL -> a ZeroMQ endpoint. */
static void endpoint_of(const char *addr, char *out, size_t size)
{
    if (strstr(addr, "://"))
        snprintf(out, size, "%s", addr);
    else
        snprintf(out, size, "tcp://%s", addr);
}

/* One request/reply with a deadline; the reply is parsed JSON or NULL with `why`. */
static cJSON *request(const char *addr, cJSON *body, char *why, size_t why_size)
{
    char endpoint[300];
    endpoint_of(addr, endpoint, sizeof endpoint);
    void *sock = orion_zmq_socket(ZMQ_REQ);
    int linger = 0, timeout = CONTROL_TIMEOUT_MS;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    char *text = cJSON_PrintUnformatted(body);
    cJSON *reply = NULL;
    if (zmq_connect(sock, endpoint) != 0) {
        snprintf(why, why_size, "bad address %s: %s", endpoint, zmq_strerror(zmq_errno()));
    } else if (zmq_send(sock, text, strlen(text), 0) < 0) {
        snprintf(why, why_size, "cannot send to %s: %s", endpoint, zmq_strerror(zmq_errno()));
    } else {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, sock, 0) < 0) {
            snprintf(why, why_size, "no answer from %s within %d ms", endpoint,
                     CONTROL_TIMEOUT_MS);
        } else {
            reply = cJSON_ParseWithLength(zmq_msg_data(&msg), zmq_msg_size(&msg));
            if (!reply)
                snprintf(why, why_size, "%s answered something that is not JSON", endpoint);
        }
        zmq_msg_close(&msg);
    }
    free(text);
    zmq_close(sock);
    if (reply && !cJSON_IsTrue(cJSON_GetObjectItem(reply, "ok"))) {
        const char *error = cJSON_GetStringValue(cJSON_GetObjectItem(reply, "error"));
        snprintf(why, why_size, "%s refused: %s", endpoint, error ? error : "no reason given");
        cJSON_Delete(reply);
        reply = NULL;
    }
    return reply;
}

static void copy_string(cJSON *obj, const char *key, char *out, size_t size)
{
    const char *value = cJSON_GetStringValue(cJSON_GetObjectItem(obj, key));
    snprintf(out, size, "%s", value ? value : "");
}

static long long number(cJSON *obj, const char *key)
{
    cJSON *item = cJSON_GetObjectItem(obj, key);
    return cJSON_IsNumber(item) ? (long long)item->valuedouble : -1;
}

static cJSON *client_identity(void)
{
    char host[256] = "", app[256] = "";
    gethostname(host, sizeof host - 1);
    ssize_t n = readlink("/proc/self/exe", app, sizeof app - 1);
    app[n > 0 ? n : 0] = 0;
    cJSON *id = cJSON_CreateObject();
    cJSON_AddStringToObject(id, "host", host);
    cJSON_AddNumberToObject(id, "pid", getpid());
    cJSON_AddStringToObject(id, "app", app);
    return id;
}

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0);
}

/* The placement settings of the reference (ORION_CROSS_NODE, ORION_DEVICE_IDS, ...),
 * as the controller's allocate request names them (docs/protocol.md). */
static void add_placement_fields(cJSON *body)
{
    static const char *const strings[][2] = {
        {"ORION_DEVICE_NAME", "device_name"}, {"ORION_DEVICE_TYPE", "device_type"},
        {"ORION_K8S_NODE", "k8s_node"}, {"ORION_SCHEDULE_RULE", "schedule_rule"},
        {"ORION_GROUP_ID", "group_id"}};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        const char *v = getenv(strings[i][0]);
        if (v && *v)
            cJSON_AddStringToObject(body, strings[i][1], v);
    }
    if (getenv("ORION_CROSS_NODE"))
        cJSON_AddBoolToObject(body, "cross_node", env_flag("ORION_CROSS_NODE"));
    if (getenv("ORION_RESERVED"))
        cJSON_AddBoolToObject(body, "reserved", env_flag("ORION_RESERVED"));
    const char *ids = getenv("ORION_DEVICE_IDS");
    if (ids && *ids) {
        cJSON *list = cJSON_AddArrayToObject(body, "device_ids");
        char copy[1024], *save = NULL;
        snprintf(copy, sizeof copy, "%s", ids);
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            cJSON_AddItemToArray(list, cJSON_CreateString(t));
    }
    const char *qos = env_flag("ORION_RES_EXCLUSIVE") ? "exclusive"
                    : env_flag("ORION_RES_SHARED_CORE") ? "shared_core"
                    : env_flag("ORION_RES_SHARED_ALL") ? "shared_all" : NULL;
    if (qos)
        cJSON_AddStringToObject(body, "qos", qos);
}

/* "allocate" takes vGPUs under a new lease; "preview" only says what it would take. */
static int request_vgpus(const char *op, const orion_config *cfg, orion_lease *lease,
                         char *why, size_t why_size)
{
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "op", op);
    cJSON_AddNumberToObject(body, "vgpu", cfg->vgpu);
    if (cfg->gmem_mib)
        cJSON_AddNumberToObject(body, "gmem", (double)cfg->gmem_mib);
    else
        cJSON_AddNullToObject(body, "gmem");
    if (cfg->ratio)
        cJSON_AddNumberToObject(body, "ratio", cfg->ratio);
    else
        cJSON_AddNullToObject(body, "ratio");
    cJSON_AddStringToObject(body, "client_id", cfg->client_id);
    add_placement_fields(body);
    cJSON *id = client_identity();
    cJSON_AddItemReferenceToObject(body, "host", cJSON_GetObjectItem(id, "host"));
    cJSON_AddItemReferenceToObject(body, "pid", cJSON_GetObjectItem(id, "pid"));
    cJSON *reply = request(cfg->controller, body, why, why_size);
    cJSON_Delete(body);
    cJSON_Delete(id);
    if (!reply)
        return -1;
    memset(lease, 0, sizeof *lease);
    copy_string(reply, "lease", lease->id, sizeof lease->id);
    cJSON *vgpus = cJSON_GetObjectItem(reply, "vgpus"), *v;
    cJSON_ArrayForEach(v, vgpus) {
        if (lease->count == ORION_MAX_DEVICES)
            break;
        orion_grant *g = &lease->grants[lease->count++];
        copy_string(v, "server", g->server, sizeof g->server);
        copy_string(v, "node", g->node, sizeof g->node);
        copy_string(v, "gpu_name", g->gpu_name, sizeof g->gpu_name);
        copy_string(v, "gpu_uuid", g->gpu_uuid, sizeof g->gpu_uuid);
        copy_string(v, "vgpu_uuid", g->vgpu_uuid, sizeof g->vgpu_uuid);
        g->gpu_index = (int)number(v, "gpu_index");
        g->memory_mib = number(v, "memory_mib");
        g->ratio = (int)number(v, "ratio");
        copy_string(v, "vgpu_id", g->vgpu_id, sizeof g->vgpu_id);
    }
    cJSON_Delete(reply);
    if ((strcmp(op, "allocate") == 0 && !lease->id[0]) || lease->count == 0) {
        snprintf(why, why_size, "the controller granted no vGPU");
        return -1;
    }
    return 0;
}

int orion_allocate(const orion_config *cfg, orion_lease *lease, char *why, size_t why_size)
{
    return request_vgpus("allocate", cfg, lease, why, why_size);
}

int orion_preview(const orion_config *cfg, orion_lease *lease, char *why, size_t why_size)
{
    return request_vgpus("preview", cfg, lease, why, why_size);
}

void orion_release(const orion_config *cfg, const orion_lease *lease)
{
    char why[256];
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "op", "release");
    cJSON_AddStringToObject(body, "lease", lease->id);
    cJSON *reply = request(cfg->controller, body, why, sizeof why);
    cJSON_Delete(body);
    if (!reply)
        ORION_WARN("release of lease %s: %s", lease->id, why);
    cJSON_Delete(reply);
}

int orion_open_session(const orion_config *cfg, const orion_lease *lease, const char *server,
                       orion_session_address *address, char *why, size_t why_size)
{
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "op", "open_session");
    cJSON_AddStringToObject(body, "lease", lease->id);
    cJSON *vgpus = cJSON_AddArrayToObject(body, "vgpus");
    for (int i = 0; i < lease->count; i++) {
        const orion_grant *g = &lease->grants[i];
        if (strcmp(g->server, server) != 0)
            continue;
        cJSON *v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "server", g->server);
        cJSON_AddStringToObject(v, "gpu_uuid", g->gpu_uuid);
        cJSON_AddNumberToObject(v, "gpu_index", g->gpu_index);
        cJSON_AddNumberToObject(v, "memory_mib", (double)g->memory_mib);
        cJSON_AddNumberToObject(v, "ratio", g->ratio);
        cJSON_AddStringToObject(v, "vgpu_id", g->vgpu_id);
        cJSON_AddItemToArray(vgpus, v);
    }
    cJSON_AddItemToObject(body, "client", client_identity());
    cJSON_AddStringToObject(body, "transport", cfg->enable_net ? "tcp" : "ipc");
    cJSON *reply = request(server, body, why, why_size);
    cJSON_Delete(body);
    if (!reply)
        return -1;
    copy_string(reply, "worker", address->worker, sizeof address->worker);
    copy_string(reply, "events", address->events, sizeof address->events);
    copy_string(reply, "token", address->token, sizeof address->token);
    cJSON_Delete(reply);
    if (!address->worker[0] || !address->token[0]) {
        snprintf(why, why_size, "%s opened no worker", server);
        return -1;
    }
    return 0;
}
