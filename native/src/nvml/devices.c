/* Which devices there are and what they are: count, handles, names, UUIDs, serial
 * numbers, PCI addresses and compute capability. Identity comes from the session's
 * snapshot (what cudaGetDeviceProperties reports), the serial number from the server. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "nvml/nvml_shim.h"

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    if (!deviceCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    return orion_nvml_count(deviceCount);
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    return nvmlDeviceGetCount_v2(deviceCount);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    unsigned int n;
    nvmlReturn_t ret = orion_nvml_count(&n);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!device || index >= n)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = orion_nvml_handle(index);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

/* The first device `matches` accepts (vGPUs of one physical GPU share its identity). */
static nvmlReturn_t find(nvmlDevice_t *device, int (*matches)(struct nvmlDevice_st *, const char *),
                         const char *key)
{
    unsigned int n;
    nvmlReturn_t ret = orion_nvml_count(&n);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!device || !key)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < n; i++) {
        struct nvmlDevice_st *d = orion_nvml_handle(i);
        if (matches(d, key)) {
            *device = d;
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

static int uuid_is(struct nvmlDevice_st *d, const char *uuid)
{
    return strcasecmp(d->uuid, uuid) == 0;
}

static int serial_is(struct nvmlDevice_st *d, const char *serial)
{
    struct orion_nvml_info info;
    return orion_nvml_info(d, &info) == NVML_SUCCESS && strcmp(info.serial, serial) == 0;
}

/* PCI attributes of a live device's snapshot (preview devices have none). */
static int attr(const struct nvmlDevice_st *d, enum cudaDeviceAttr a)
{
    return d->snapshot && (unsigned)a < d->snapshot->attr_count ? d->snapshot->attrs[a] : 0;
}

static int bus_id_is(struct nvmlDevice_st *d, const char *text)
{
    unsigned int domain = 0, bus, dev, fn;
    if (sscanf(text, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) != 4 &&
        sscanf(text, "%x:%x.%x", &bus, &dev, &fn) != 3)
        return 0;
    return d->snapshot && domain == (unsigned)attr(d, cudaDevAttrPciDomainId) &&
           bus == (unsigned)attr(d, cudaDevAttrPciBusId) &&
           dev == (unsigned)attr(d, cudaDevAttrPciDeviceId);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    return find(device, uuid_is, uuid);
}

nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device)
{
    return find(device, serial_is, serial);
}

nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    return find(device, bus_id_is, pciBusId);
}

nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByPciBusId_v2(pciBusId, device);
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    struct nvmlDevice_st *d;
    nvmlReturn_t ret = orion_nvml_device(device, &d);
    if (ret == NVML_SUCCESS && !index)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        *index = d->index;
    return ret;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    struct nvmlDevice_st *d;
    nvmlReturn_t ret = orion_nvml_device(device, &d);
    return ret == NVML_SUCCESS ? orion_nvml_string(d->name, name, length) : ret;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    struct nvmlDevice_st *d;
    nvmlReturn_t ret = orion_nvml_device(device, &d);
    return ret == NVML_SUCCESS ? orion_nvml_string(d->uuid, uuid, length) : ret;
}

nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length)
{
    struct nvmlDevice_st *d;
    struct orion_nvml_info info;
    nvmlReturn_t ret = orion_nvml_device(device, &d);
    if (ret == NVML_SUCCESS)
        ret = orion_nvml_info(d, &info);
    if (ret == NVML_SUCCESS && !info.serial[0])
        ret = NVML_ERROR_NOT_SUPPORTED;
    return ret == NVML_SUCCESS ? orion_nvml_string(info.serial, serial, length) : ret;
}

/* `full`: the current nvmlPciInfo_t; else only the fields older layouts share with it
 * (an application built against an old header passes a smaller struct). */
static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci, int full)
{
    struct nvmlDevice_st *d;
    nvmlReturn_t ret = orion_nvml_device(device, &d);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->live)
        return NVML_ERROR_NOT_SUPPORTED;
    pci->domain = (unsigned)attr(d, cudaDevAttrPciDomainId);
    pci->bus = (unsigned)attr(d, cudaDevAttrPciBusId);
    pci->device = (unsigned)attr(d, cudaDevAttrPciDeviceId);
    pci->pciDeviceId = (unsigned)attr(d, cudaDevAttrGpuPciDeviceId);
    pci->pciSubSystemId = (unsigned)attr(d, cudaDevAttrGpuPciSubsystemId);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT,
             NVML_DEVICE_PCI_BUS_ID_FMT_ARGS(pci));
    if (full)
        snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_FMT,
                 NVML_DEVICE_PCI_BUS_ID_FMT_ARGS(pci));
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return pci_info(device, pci, 1);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return pci_info(device, pci, 0);
}

nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return pci_info(device, pci, 0);
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    struct nvmlDevice_st *d;
    nvmlReturn_t ret = orion_nvml_device(device, &d);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!major || !minor)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->live)
        return NVML_ERROR_NOT_SUPPORTED;
    *major = attr(d, cudaDevAttrComputeCapabilityMajor);
    *minor = attr(d, cudaDevAttrComputeCapabilityMinor);
    return NVML_SUCCESS;
}
