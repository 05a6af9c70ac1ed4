/* Internal interface of the NVML shim (libnvidia-ml.so.1).
 *
 * The shim holds no connection of its own: it links against Orion's libcudart.so.13 and
 * uses its client runtime (native/src/orion.h, exported under the private version
 * ORION_PRIVATE), so in a process that also runs CUDA both see the same vGPUs through
 * the same sessions. A handle is the address of one entry of the device table, which
 * is filled at nvmlInit:
 *   sessions  the runtime's vGPUs (it takes them now if it has not: the lease flow of
 *             any CUDA program), described by their snapshots and, for what changes
 *             (memory in use, sensors), by orionNvmlDeviceInfo through their session;
 *   preview   when the runtime holds no vGPU and ORION_VGPU is unset (a monitoring
 *             tool): what a new run with the current settings would get, as granted
 *             by the controller and given back at once. Nothing runs on a preview
 *             device, so only its identity and size are known.
 */
#pragma once

/* Both the old unversioned entry points and their _v2/_v3 successors are defined here,
 * as the driver's library exports both (and the spec reads the header this way). */
#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include <nvml.h>
#include <stdint.h>

#include "orion.h"

/* Filled by the worker (orion_server/backends/cuda_nvml.py, NVML_INFO): 256 bytes. */
#define ORION_NVML_INFO_VERSION 1
#define ORION_NVML_NA 0xFFFFFFFFu   /* the physical GPU does not report this value */
struct orion_nvml_info {
    uint32_t version;
    uint32_t reserved0;
    uint64_t memory_used;            /* bytes the session holds on this vGPU */
    uint32_t gpu_util, memory_util;  /* % of the physical GPU's time, last sample */
    uint32_t temperature;            /* C */
    uint32_t power_usage;            /* mW */
    uint32_t power_limit, enforced_power_limit;   /* mW */
    uint32_t fan_speed;              /* % */
    uint32_t pstate;                 /* nvmlPstates_t */
    uint32_t clocks[4];              /* MHz now, indexed by nvmlClockType_t */
    uint32_t max_clocks[4];
    char driver_version[80];
    char serial[32];
    uint32_t reserved[16];
};
_Static_assert(sizeof(struct orion_nvml_info) == 256, "must match cuda_nvml.py");

struct nvmlDevice_st {
    unsigned int index;
    int live;                        /* 0: a preview, no session behind it */
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    unsigned long long total;        /* bytes: the vGPU's size */
    const struct orion_device_snapshot *snapshot;   /* NULL in a preview */
};

/* init.c: the device table; NVML_SUCCESS with *dev set when `device` is one of ours. */
nvmlReturn_t orion_nvml_device(nvmlDevice_t device, struct nvmlDevice_st **dev);
nvmlReturn_t orion_nvml_count(unsigned int *count);
nvmlDevice_t orion_nvml_handle(unsigned int index);   /* NULL past the count */
/* What the worker knows now of a live device (never of a preview one). */
nvmlReturn_t orion_nvml_info(const struct nvmlDevice_st *dev, struct orion_nvml_info *info);
nvmlReturn_t orion_nvml_unsupported(const char *name);   /* logs the name once */
/* Copy a string into an NVML output buffer of `length` bytes. */
nvmlReturn_t orion_nvml_string(const char *value, char *out, unsigned int length);
