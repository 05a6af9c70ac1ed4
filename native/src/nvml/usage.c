/* What a vGPU holds: its memory (its own size, and what its session has allocated, as
 * the worker accounts it against that size) and the process using it (this one: a vGPU
 * belongs to one application run). */
#include <unistd.h>

#include "nvml/nvml_shim.h"

/* Bytes in use on the vGPU: 0 on a preview device, where nothing runs yet. */
static nvmlReturn_t memory_used(nvmlDevice_t device, struct nvmlDevice_st **d,
                                unsigned long long *used)
{
    struct orion_nvml_info info;
    nvmlReturn_t ret = orion_nvml_device(device, d);
    *used = 0;
    if (ret != NVML_SUCCESS || !(*d)->live)
        return ret;
    ret = orion_nvml_info(*d, &info);
    *used = info.memory_used < (*d)->total ? info.memory_used : (*d)->total;
    return ret;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    struct nvmlDevice_st *d;
    unsigned long long used;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = memory_used(device, &d, &used);
    if (ret == NVML_SUCCESS) {
        memory->total = d->total;
        memory->used = used;
        memory->free = d->total - used;
    }
    return ret;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    struct nvmlDevice_st *d;
    unsigned long long used;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlReturn_t ret = memory_used(device, &d, &used);
    if (ret == NVML_SUCCESS) {
        memory->total = d->total;
        memory->reserved = 0;   /* the driver's own reserve is outside the vGPU's size */
        memory->used = used;
        memory->free = d->total - used;
    }
    return ret;
}

/* NVML's two-call protocol: ask with too small an array, learn the count, ask again.
 * Only compute processes run on a vGPU, and only this one (v1: the short record). */
static nvmlReturn_t processes(nvmlDevice_t device, unsigned int *infoCount, void *infos,
                              int compute, int v1)
{
    struct nvmlDevice_st *d;
    unsigned long long used;
    if (!infoCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = memory_used(device, &d, &used);
    if (ret != NVML_SUCCESS)
        return ret;
    unsigned int n = compute && d->live;
    if (*infoCount < n || (n && !infos)) {
        *infoCount = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *infoCount = n;
    if (n && v1)
        *(nvmlProcessInfo_v1_t *)infos = (nvmlProcessInfo_v1_t){(unsigned)getpid(), used};
    else if (n)   /* not a MIG instance: both instance ids are 0xFFFFFFFF */
        *(nvmlProcessInfo_t *)infos = (nvmlProcessInfo_t){(unsigned)getpid(), used,
                                                          0xFFFFFFFFu, 0xFFFFFFFFu};
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_t *infos)
{
    return processes(device, infoCount, infos, 1, 0);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_v2_t *infos)
{
    return processes(device, infoCount, infos, 1, 0);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                  nvmlProcessInfo_v1_t *infos)
{
    return processes(device, infoCount, infos, 1, 1);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                      nvmlProcessInfo_t *infos)
{
    return processes(device, infoCount, infos, 0, 0);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                      nvmlProcessInfo_v2_t *infos)
{
    return processes(device, infoCount, infos, 0, 0);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                   nvmlProcessInfo_v1_t *infos)
{
    return processes(device, infoCount, infos, 0, 1);
}

nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t device,
                                                        unsigned int *infoCount,
                                                        nvmlProcessInfo_t *infos)
{
    return processes(device, infoCount, infos, 0, 0);
}

nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v2(nvmlDevice_t device,
                                                        unsigned int *infoCount,
                                                        nvmlProcessInfo_v2_t *infos)
{
    return processes(device, infoCount, infos, 0, 0);
}

nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_v1_t *infos)
{
    return processes(device, infoCount, infos, 0, 1);
}
