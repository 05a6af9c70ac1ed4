/* nvmlInit and the device table (see nvml_shim.h for the two ways it is filled), the
 * wire query behind every changing value, versions and error texts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "nvml_internal.h"
#include "nvml/nvml_shim.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int users;                 /* nvmlInit calls not shut down yet (NVML counts them) */
static unsigned int count;
static struct nvmlDevice_st table[ORION_MAX_DEVICES];

static void format_uuid(const uint8_t *b, char *out, size_t size)
{
    snprintf(out, size, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
             b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* The runtime's vGPUs, taken now if no CUDA call has taken them yet. Their UUIDs are
 * the ones cudaGetDeviceProperties reports, so tools can match CUDA and NVML devices. */
static nvmlReturn_t describe_sessions(void)
{
    if (orion_init() != cudaSuccess)
        return NVML_ERROR_DRIVER_NOT_LOADED;   /* the client log says why */
    count = (unsigned)orion_device_count();
    for (unsigned i = 0; i < count; i++) {
        struct nvmlDevice_st *d = &table[i];
        d->snapshot = orion_snapshot((int)i);
        d->index = i;
        d->live = 1;
        snprintf(d->name, sizeof d->name, "%.*s", (int)sizeof d->name - 1, d->snapshot->name);
        format_uuid(d->snapshot->uuid, d->uuid, sizeof d->uuid);
        d->total = d->snapshot->total_mem;
    }
    return NVML_SUCCESS;
}

/* What a new run would get: the controller's preview for these settings (it holds
 * nothing). */
static nvmlReturn_t describe_preview(void)
{
    static orion_config cfg;
    static orion_lease lease;
    char why[512];
    orion_log_open();
    if (orion_config_load(&cfg)) {
        ORION_ERROR("configuration: %s", cfg.error);
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    if (orion_preview(&cfg, &lease, why, sizeof why)) {
        ORION_ERROR("NVML: a new run would get no vGPU: %s", why);
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    count = (unsigned)lease.count;
    for (unsigned i = 0; i < count; i++) {
        struct nvmlDevice_st *d = &table[i];
        const orion_grant *g = &lease.grants[i];
        memset(d, 0, sizeof *d);
        d->index = i;
        snprintf(d->name, sizeof d->name, "%s", g->gpu_name);
        snprintf(d->uuid, sizeof d->uuid, "%s", g->vgpu_uuid);
        d->total = (unsigned long long)g->memory_mib << 20;
    }
    ORION_INFO("NVML: ORION_VGPU is unset and no vGPU is held: describing what a new run "
               "would get (%u vGPU(s))", count);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;   /* NO_GPUS, NO_ATTACH: there is nothing to attach to here */
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = NVML_SUCCESS;
    if (users == 0) {
        uint16_t remote;
        const char *vgpu = getenv("ORION_VGPU");
        ret = orion_session_of(0, &remote) || (vgpu && *vgpu) ? describe_sessions()
                                                              : describe_preview();
    }
    if (ret == NVML_SUCCESS)
        users++;
    pthread_mutex_unlock(&lock);
    return ret;
}

nvmlReturn_t nvmlInit_v2(void)
{
    return nvmlInitWithFlags(0);
}

nvmlReturn_t nvmlInit(void)
{
    return nvmlInitWithFlags(0);
}

/* The vGPUs stay the runtime's until the process exits: nothing is given back here. */
nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = users ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
    if (users)
        users--;
    pthread_mutex_unlock(&lock);
    return ret;
}

/* Under the lock: a preview becomes the real thing once CUDA has taken its vGPUs. */
static nvmlReturn_t ready(void)
{
    uint16_t remote;
    if (!users)
        return NVML_ERROR_UNINITIALIZED;
    if (count && !table[0].live && orion_session_of(0, &remote))
        return describe_sessions();
    return NVML_SUCCESS;
}

nvmlReturn_t orion_nvml_count(unsigned int *n)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = ready();
    *n = count;
    pthread_mutex_unlock(&lock);
    return ret;
}

nvmlDevice_t orion_nvml_handle(unsigned int index)
{
    return index < count ? &table[index] : NULL;
}

nvmlReturn_t orion_nvml_device(nvmlDevice_t device, struct nvmlDevice_st **dev)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = ready();
    pthread_mutex_unlock(&lock);
    if (ret != NVML_SUCCESS)
        return ret;
    if (device < table || device >= table + count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *dev = device;
    return NVML_SUCCESS;
}

nvmlReturn_t orion_nvml_info(const struct nvmlDevice_st *dev, struct orion_nvml_info *info)
{
    uint16_t remote;
    if (!dev->live || !orion_session_of((int)dev->index, &remote))
        return NVML_ERROR_NOT_SUPPORTED;
    /* The query travels on the vGPU's own session like a CUDA call on that device; the
     * application's current device and last CUDA error stay as they were. */
    int saved = orion_current_device();
    cudaError_t last = orion_take_last_error(0);
    orion_set_current_device((int)dev->index);
    cudaError_t err = orionNvmlDeviceInfo(remote, info, sizeof *info);
    orion_set_current_device(saved);
    orion_set_last_error(last);
    if (err == cudaSuccess)
        return info->version == ORION_NVML_INFO_VERSION ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
    if (err == ORION_TRANSPORT_ERROR)
        return NVML_ERROR_GPU_IS_LOST;
    return err == cudaErrorNotSupported ? NVML_ERROR_NOT_SUPPORTED : NVML_ERROR_UNKNOWN;
}

nvmlReturn_t orion_nvml_string(const char *value, char *out, unsigned int length)
{
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) >= length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t orion_nvml_unsupported(const char *name)
{
    if (orion_first_time(name))
        ORION_WARN("%s is not supported by Orion: returning NVML_ERROR_NOT_SUPPORTED", name);
    return NVML_ERROR_NOT_SUPPORTED;
}

/* The driver of the physical GPU under the first vGPU (the one nvidia-smi would name). */
static nvmlReturn_t driver_version(char *out, size_t size)
{
    struct nvmlDevice_st *d;
    struct orion_nvml_info info;
    nvmlReturn_t ret = orion_nvml_device(orion_nvml_handle(0), &d);
    if (ret == NVML_SUCCESS)
        ret = orion_nvml_info(d, &info);
    if (ret == NVML_SUCCESS)
        snprintf(out, size, "%s", info.driver_version);
    return ret;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    char text[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
    nvmlReturn_t ret = driver_version(text, sizeof text);
    return ret == NVML_SUCCESS ? orion_nvml_string(text, version, length) : ret;
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    char driver[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE], text[sizeof driver + 4];
    nvmlReturn_t ret = driver_version(driver, sizeof driver);
    snprintf(text, sizeof text, "%s.%s", NVML_API_VERSION_STR, driver);
    return ret == NVML_SUCCESS ? orion_nvml_string(text, version, length) : ret;
}

/* The CUDA version the vGPUs offer is the runtime Orion emulates, as
 * cudaDriverGetVersion reports it, whatever the server's driver could do. */
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = CUDART_VERSION;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    return nvmlSystemGetCudaDriverVersion_v2(cudaDriverVersion);
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    static const char *const texts[] = {
        [NVML_SUCCESS] = "Success",
        [NVML_ERROR_UNINITIALIZED] = "Uninitialized",
        [NVML_ERROR_INVALID_ARGUMENT] = "Invalid Argument",
        [NVML_ERROR_NOT_SUPPORTED] = "Not Supported",
        [NVML_ERROR_NO_PERMISSION] = "Insufficient Permissions",
        [NVML_ERROR_ALREADY_INITIALIZED] = "Already Initialized",
        [NVML_ERROR_NOT_FOUND] = "Not Found",
        [NVML_ERROR_INSUFFICIENT_SIZE] = "Insufficient Size",
        [NVML_ERROR_INSUFFICIENT_POWER] = "Insufficient External Power",
        [NVML_ERROR_DRIVER_NOT_LOADED] = "Driver Not Loaded",
        [NVML_ERROR_TIMEOUT] = "Timeout",
        [NVML_ERROR_IRQ_ISSUE] = "Interrupt Request Issue",
        [NVML_ERROR_LIBRARY_NOT_FOUND] = "NVML Shared Library Not Found",
        [NVML_ERROR_FUNCTION_NOT_FOUND] = "Function Not Found",
        [NVML_ERROR_CORRUPTED_INFOROM] = "Corrupted infoROM",
        [NVML_ERROR_GPU_IS_LOST] = "GPU is lost",
        [NVML_ERROR_RESET_REQUIRED] = "GPU requires restart",
        [NVML_ERROR_OPERATING_SYSTEM] = "The operating system has blocked the request.",
        [NVML_ERROR_LIB_RM_VERSION_MISMATCH] = "RM has detected an NVML/RM version mismatch.",
        [NVML_ERROR_IN_USE] = "In use by another client",
        [NVML_ERROR_MEMORY] = "Insufficient Memory",
        [NVML_ERROR_NO_DATA] = "No data",
        [NVML_ERROR_VGPU_ECC_NOT_SUPPORTED] = "vGPU ECC is not supported",
        [NVML_ERROR_INSUFFICIENT_RESOURCES] = "Insufficient resources",
        [NVML_ERROR_FREQ_NOT_SUPPORTED] = "Frequency not supported",
        [NVML_ERROR_ARGUMENT_VERSION_MISMATCH] = "Argument version mismatch",
        [NVML_ERROR_DEPRECATED] = "Deprecated",
        [NVML_ERROR_NOT_READY] = "Not ready",
        [NVML_ERROR_GPU_NOT_FOUND] = "GPU not found",
        [NVML_ERROR_INVALID_STATE] = "Invalid state",
    };
    if ((unsigned)result < sizeof texts / sizeof texts[0] && texts[result])
        return texts[result];
    return "Unknown Error";
}
