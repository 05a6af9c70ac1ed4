/* Sensors of the physical GPU under a vGPU: utilisation, temperature, power, clocks,
 * fan and performance state, as the server's NVML reads them now. A value that GPU
 * does not report (ORION_NVML_NA), and every value of a preview device, is
 * NVML_ERROR_NOT_SUPPORTED, as the driver answers for a sensor a board lacks. */
#include <stddef.h>
#include <string.h>

#include "nvml/nvml_shim.h"

static nvmlReturn_t read_info(nvmlDevice_t device, const void *out, struct orion_nvml_info *info)
{
    struct nvmlDevice_st *d;
    nvmlReturn_t ret = orion_nvml_device(device, &d);
    if (ret != NVML_SUCCESS)
        return ret;
    return out ? orion_nvml_info(d, info) : NVML_ERROR_INVALID_ARGUMENT;
}

/* The u32 at byte `field` of the info, unless the GPU does not report it. */
static nvmlReturn_t pick(const struct orion_nvml_info *info, size_t field, unsigned int *out)
{
    uint32_t v;
    memcpy(&v, (const char *)info + field, sizeof v);
    if (v == ORION_NVML_NA)
        return NVML_ERROR_NOT_SUPPORTED;
    *out = v;
    return NVML_SUCCESS;
}

static nvmlReturn_t value(nvmlDevice_t device, unsigned int *out, size_t field)
{
    struct orion_nvml_info info;
    nvmlReturn_t ret = read_info(device, out, &info);
    return ret == NVML_SUCCESS ? pick(&info, field, out) : ret;
}

#define FIELD(name) offsetof(struct orion_nvml_info, name)

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    struct orion_nvml_info info;
    nvmlReturn_t ret = read_info(device, utilization, &info);
    if (ret == NVML_SUCCESS)
        ret = pick(&info, FIELD(gpu_util), &utilization->gpu);
    return ret == NVML_SUCCESS ? pick(&info, FIELD(memory_util), &utilization->memory) : ret;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType,
                                      unsigned int *temp)
{
    if (sensorType != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    return value(device, temp, FIELD(temperature));
}

nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temperature)
{
    unsigned int t;
    if (!temperature)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (temperature->version != nvmlTemperature_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlReturn_t ret = nvmlDeviceGetTemperature(device, temperature->sensorType, &t);
    if (ret == NVML_SUCCESS)
        temperature->temperature = (int)t;
    return ret;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power)
{
    return value(device, power, FIELD(power_usage));
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit)
{
    return value(device, limit, FIELD(power_limit));
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit)
{
    return value(device, limit, FIELD(enforced_power_limit));
}

nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed)
{
    return value(device, speed, FIELD(fan_speed));
}

nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *pState)
{
    unsigned int state;
    nvmlReturn_t ret = value(device, pState ? &state : NULL, FIELD(pstate));
    if (ret == NVML_SUCCESS)
        *pState = (nvmlPstates_t)state;
    return ret;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock)
{
    if ((unsigned)type >= 4)
        return NVML_ERROR_INVALID_ARGUMENT;
    return value(device, clock, FIELD(clocks) + type * sizeof(uint32_t));
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type,
                                       unsigned int *clock)
{
    if ((unsigned)type >= 4)
        return NVML_ERROR_INVALID_ARGUMENT;
    return value(device, clock, FIELD(max_clocks) + type * sizeof(uint32_t));
}
