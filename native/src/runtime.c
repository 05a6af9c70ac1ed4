/* Lazy start and orderly end of the client runtime.
 *
 * The first CUDA call of the application (from any thread) takes its vGPUs: it asks the
 * controller for a lease, opens one session per server holding a vGPU of it, and takes a
 * snapshot of each device. Failure at any step leaves the runtime with no device: every
 * call answers the init error and the log says why. At exit the sessions are closed (the
 * workers then free everything) and the lease is given back.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cudart_internal.h"
#include "control.h"
#include "orion.h"
#include "shm.h"

typedef struct device_slot {
    orion_session *session;
    uint16_t remote_index;          /* the device's number inside its session */
    struct orion_device_snapshot snapshot;
} device_slot;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static cudaError_t init_error = cudaErrorNoDevice;
static orion_config config;
static orion_lease lease;
static int device_count;
static device_slot devices[ORION_MAX_DEVICES];
static orion_session *sessions[ORION_MAX_DEVICES];
static int session_count;

static __thread int current_device;
static __thread int initialising;   /* calls made by start_runtime itself */
static __thread cudaError_t last_error;

static void shutdown_runtime(void)
{
    orion_callbacks_stop();
    orion_shm_unlink_all();
    for (int i = 0; i < session_count; i++)
        orion_session_close(sessions[i]);
    session_count = device_count = 0;
    if (lease.id[0])
        orion_release(&config, &lease);
    ORION_INFO("runtime stopped, lease %s released", lease.id);
    lease.id[0] = 0;
    init_error = cudaErrorCudartUnloading;
}

/* Open the session of one server and attach its devices to the device table. */
static int open_server(const char *server)
{
    orion_session_address address;
    char why[512];
    if (orion_open_session(&config, &lease, server, &address, why, sizeof why)) {
        ORION_ERROR("cannot open a session on %s: %s", server, why);
        return -1;
    }
    orion_session *s = orion_session_open(&address);
    if (!s)
        return -1;
    sessions[session_count++] = s;
    ORION_INFO("session on %s through %s", server, address.worker);
    uint16_t remote = 0;
    for (int i = 0; i < lease.count; i++) {
        if (strcmp(lease.grants[i].server, server) == 0) {
            devices[i].session = s;
            devices[i].remote_index = remote++;
        }
    }
    return 0;
}

static void take_vgpus(void)
{
    orion_log_open();
    if (orion_config_load(&config)) {
        ORION_ERROR("configuration: %s", config.error);
        init_error = cudaErrorInvalidValue;
        return;
    }
    char why[512];
    ORION_INFO("asking %s for %d vGPU(s), %lld MiB, %d%%", config.controller, config.vgpu,
               config.gmem_mib, config.ratio);
    if (orion_allocate(&config, &lease, why, sizeof why)) {
        ORION_ERROR("no vGPU: %s", why);
        init_error = cudaErrorNoDevice;
        return;
    }
    for (int i = 0; i < lease.count; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(lease.grants[j].server, lease.grants[i].server) == 0;
        if (!seen && open_server(lease.grants[i].server))
            goto fail;
    }
    device_count = lease.count;
    atexit(shutdown_runtime);
    init_error = cudaSuccess;
    for (int i = 0; i < device_count; i++) {
        int saved = current_device;
        current_device = i;
        cudaError_t err = orionDeviceSnapshot(devices[i].remote_index, &devices[i].snapshot,
                                              sizeof devices[i].snapshot);
        current_device = saved;
        if (err != cudaSuccess) {
            ORION_ERROR("device %d: no snapshot (error %d)", i, err);
            init_error = err;
            return;
        }
        ORION_INFO("device %d: %s, %llu MiB on %s GPU %d", i, devices[i].snapshot.name,
                   (unsigned long long)devices[i].snapshot.total_mem >> 20,
                   lease.grants[i].node, lease.grants[i].gpu_index);
    }
    last_error = cudaSuccess;
    return;
fail:
    for (int i = 0; i < session_count; i++)
        orion_session_close(sessions[i]);
    session_count = 0;
    orion_release(&config, &lease);
    init_error = cudaErrorNoDevice;
}

static void start_runtime(void)
{
    initialising = 1;
    take_vgpus();
    initialising = 0;
}

cudaError_t orion_init(void)
{
    if (initialising)
        return cudaSuccess;
    pthread_once(&init_once, start_runtime);
    return init_error;
}

int orion_device_count(void)
{
    return orion_init() == cudaSuccess ? device_count : 0;
}

int orion_current_device(void)
{
    return current_device;
}

void orion_set_current_device(int device)
{
    current_device = device;
}

orion_session *orion_session_of(int device, uint16_t *remote_index)
{
    if (device < 0 || device >= device_count)
        return NULL;
    *remote_index = devices[device].remote_index;
    return devices[device].session;
}

const struct orion_device_snapshot *orion_snapshot(int device)
{
    if (orion_init() != cudaSuccess || device < 0 || device >= device_count)
        return NULL;
    return &devices[device].snapshot;
}

cudaError_t orion_fail(cudaError_t err)
{
    if (err != cudaSuccess)
        last_error = err;
    return err;
}

void orion_set_last_error(cudaError_t err)
{
    last_error = err;
}

cudaError_t orion_take_last_error(int reset)
{
    cudaError_t err = last_error;
    if (reset)
        last_error = cudaSuccess;
    return err;
}
