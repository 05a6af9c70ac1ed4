/* Device management answered in the client: count, current device, properties,
 * attributes, versions and error texts never cross the network. Properties and
 * attributes come from the snapshot taken when the session opened, where the server
 * put the vGPU's memory size in place of the physical GPU's. */
#include <stdlib.h>
#include <string.h>

#include "orion.h"

struct orion_error_text { int code; const char *name; const char *text; };
extern const struct orion_error_text orion_error_texts[];
extern const size_t orion_error_text_count;

static const struct orion_error_text *error_text(cudaError_t error)
{
    size_t lo = 0, hi = orion_error_text_count;
    while (lo < hi) {   /* the table is ordered by code */
        size_t mid = (lo + hi) / 2;
        if (orion_error_texts[mid].code == (int)error)
            return &orion_error_texts[mid];
        if (orion_error_texts[mid].code < (int)error)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *cudaGetErrorName(cudaError_t error)
{
    const struct orion_error_text *t = error_text(error);
    return t ? t->name : "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t error)
{
    const struct orion_error_text *t = error_text(error);
    return t ? t->text : "unrecognized error code";
}

cudaError_t cudaGetLastError(void)
{
    return orion_take_last_error(1);
}

cudaError_t cudaPeekAtLastError(void)
{
    return orion_take_last_error(0);
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = orion_init();
    *count = orion_device_count();
    return err == cudaSuccess ? cudaSuccess : orion_fail(err);
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    *device = orion_current_device();
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    if (device < 0 || device >= orion_device_count())
        return orion_fail(cudaErrorInvalidDevice);
    orion_set_current_device(device);
    return cudaSuccess;
}

cudaError_t cudaInitDevice(int device, unsigned int deviceFlags, unsigned int flags)
{
    (void)deviceFlags;
    (void)flags;
    return cudaSetDevice(device);
}

cudaError_t cudaSetValidDevices(int *device_arr, int len)
{
    if (len < 0 || (len && !device_arr))
        return orion_fail(cudaErrorInvalidValue);
    for (int i = 0; i < len; i++)
        if (device_arr[i] < 0 || device_arr[i] >= orion_device_count())
            return orion_fail(cudaErrorInvalidDevice);
    return len ? cudaSetDevice(device_arr[0]) : cudaSuccess;
}

/* Device flags are kept per process, as the runtime keeps them per primary context. */
static unsigned int device_flags;

cudaError_t cudaSetDeviceFlags(unsigned int flags)
{
    device_flags = flags;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceFlags(unsigned int *flags)
{
    if (!flags)
        return orion_fail(cudaErrorInvalidValue);
    *flags = device_flags;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *version)
{
    if (!version)
        return orion_fail(cudaErrorInvalidValue);
    *version = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version)
{
    if (!version)
        return orion_fail(cudaErrorInvalidValue);
    *version = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    if (!value)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    const struct orion_device_snapshot *s = orion_snapshot(device);
    if (!s)
        return orion_fail(cudaErrorInvalidDevice);
    if ((int)attr <= 0 || (int)attr >= ORION_SNAPSHOT_ATTRS || (unsigned)attr >= s->attr_count)
        return orion_fail(cudaErrorInvalidValue);
    *value = s->attrs[attr];
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    if (!prop)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    const struct orion_device_snapshot *s = orion_snapshot(device);
    if (!s)
        return orion_fail(cudaErrorInvalidDevice);
    const int32_t *a = s->attrs;
    memset(prop, 0, sizeof *prop);
    memcpy(prop->name, s->name, sizeof prop->name);
    prop->name[sizeof prop->name - 1] = 0;
    memcpy(prop->uuid.bytes, s->uuid, sizeof prop->uuid.bytes);
    prop->totalGlobalMem = s->total_mem;
    prop->sharedMemPerBlock = (size_t)a[cudaDevAttrMaxSharedMemoryPerBlock];
    prop->regsPerBlock = a[cudaDevAttrMaxRegistersPerBlock];
    prop->warpSize = a[cudaDevAttrWarpSize];
    prop->memPitch = (size_t)(uint32_t)a[cudaDevAttrMaxPitch];
    prop->maxThreadsPerBlock = a[cudaDevAttrMaxThreadsPerBlock];
    prop->maxThreadsDim[0] = a[cudaDevAttrMaxBlockDimX];
    prop->maxThreadsDim[1] = a[cudaDevAttrMaxBlockDimY];
    prop->maxThreadsDim[2] = a[cudaDevAttrMaxBlockDimZ];
    prop->maxGridSize[0] = a[cudaDevAttrMaxGridDimX];
    prop->maxGridSize[1] = a[cudaDevAttrMaxGridDimY];
    prop->maxGridSize[2] = a[cudaDevAttrMaxGridDimZ];
    prop->totalConstMem = (size_t)a[cudaDevAttrTotalConstantMemory];
    prop->major = a[cudaDevAttrComputeCapabilityMajor];
    prop->minor = a[cudaDevAttrComputeCapabilityMinor];
    prop->textureAlignment = (size_t)a[cudaDevAttrTextureAlignment];
    prop->texturePitchAlignment = (size_t)a[cudaDevAttrTexturePitchAlignment];
    prop->multiProcessorCount = a[cudaDevAttrMultiProcessorCount];
    prop->integrated = a[cudaDevAttrIntegrated];
    prop->canMapHostMemory = a[cudaDevAttrCanMapHostMemory];
    prop->maxTexture1D = a[cudaDevAttrMaxTexture1DWidth];
    prop->maxTexture1DMipmap = a[cudaDevAttrMaxTexture1DMipmappedWidth];
    prop->maxTexture2D[0] = a[cudaDevAttrMaxTexture2DWidth];
    prop->maxTexture2D[1] = a[cudaDevAttrMaxTexture2DHeight];
    prop->maxTexture2DMipmap[0] = a[cudaDevAttrMaxTexture2DMipmappedWidth];
    prop->maxTexture2DMipmap[1] = a[cudaDevAttrMaxTexture2DMipmappedHeight];
    prop->maxTexture2DLinear[0] = a[cudaDevAttrMaxTexture2DLinearWidth];
    prop->maxTexture2DLinear[1] = a[cudaDevAttrMaxTexture2DLinearHeight];
    prop->maxTexture2DLinear[2] = a[cudaDevAttrMaxTexture2DLinearPitch];
    prop->maxTexture2DGather[0] = a[cudaDevAttrMaxTexture2DGatherWidth];
    prop->maxTexture2DGather[1] = a[cudaDevAttrMaxTexture2DGatherHeight];
    prop->maxTexture3D[0] = a[cudaDevAttrMaxTexture3DWidth];
    prop->maxTexture3D[1] = a[cudaDevAttrMaxTexture3DHeight];
    prop->maxTexture3D[2] = a[cudaDevAttrMaxTexture3DDepth];
    prop->maxTexture3DAlt[0] = a[cudaDevAttrMaxTexture3DWidthAlt];
    prop->maxTexture3DAlt[1] = a[cudaDevAttrMaxTexture3DHeightAlt];
    prop->maxTexture3DAlt[2] = a[cudaDevAttrMaxTexture3DDepthAlt];
    prop->maxTextureCubemap = a[cudaDevAttrMaxTextureCubemapWidth];
    prop->maxTexture1DLayered[0] = a[cudaDevAttrMaxTexture1DLayeredWidth];
    prop->maxTexture1DLayered[1] = a[cudaDevAttrMaxTexture1DLayeredLayers];
    prop->maxTexture2DLayered[0] = a[cudaDevAttrMaxTexture2DLayeredWidth];
    prop->maxTexture2DLayered[1] = a[cudaDevAttrMaxTexture2DLayeredHeight];
    prop->maxTexture2DLayered[2] = a[cudaDevAttrMaxTexture2DLayeredLayers];
    prop->maxTextureCubemapLayered[0] = a[cudaDevAttrMaxTextureCubemapLayeredWidth];
    prop->maxTextureCubemapLayered[1] = a[cudaDevAttrMaxTextureCubemapLayeredLayers];
    prop->maxSurface1D = a[cudaDevAttrMaxSurface1DWidth];
    prop->maxSurface2D[0] = a[cudaDevAttrMaxSurface2DWidth];
    prop->maxSurface2D[1] = a[cudaDevAttrMaxSurface2DHeight];
    prop->maxSurface3D[0] = a[cudaDevAttrMaxSurface3DWidth];
    prop->maxSurface3D[1] = a[cudaDevAttrMaxSurface3DHeight];
    prop->maxSurface3D[2] = a[cudaDevAttrMaxSurface3DDepth];
    prop->maxSurface1DLayered[0] = a[cudaDevAttrMaxSurface1DLayeredWidth];
    prop->maxSurface1DLayered[1] = a[cudaDevAttrMaxSurface1DLayeredLayers];
    prop->maxSurface2DLayered[0] = a[cudaDevAttrMaxSurface2DLayeredWidth];
    prop->maxSurface2DLayered[1] = a[cudaDevAttrMaxSurface2DLayeredHeight];
    prop->maxSurface2DLayered[2] = a[cudaDevAttrMaxSurface2DLayeredLayers];
    prop->maxSurfaceCubemap = a[cudaDevAttrMaxSurfaceCubemapWidth];
    prop->maxSurfaceCubemapLayered[0] = a[cudaDevAttrMaxSurfaceCubemapLayeredWidth];
    prop->maxSurfaceCubemapLayered[1] = a[cudaDevAttrMaxSurfaceCubemapLayeredLayers];
    prop->surfaceAlignment = (size_t)a[cudaDevAttrSurfaceAlignment];
    prop->concurrentKernels = a[cudaDevAttrConcurrentKernels];
    prop->ECCEnabled = a[cudaDevAttrEccEnabled];
    prop->pciBusID = a[cudaDevAttrPciBusId];
    prop->pciDeviceID = a[cudaDevAttrPciDeviceId];
    prop->pciDomainID = a[cudaDevAttrPciDomainId];
    prop->tccDriver = a[cudaDevAttrTccDriver];
    prop->asyncEngineCount = a[cudaDevAttrAsyncEngineCount];
    prop->unifiedAddressing = a[cudaDevAttrUnifiedAddressing];
    prop->memoryBusWidth = a[cudaDevAttrGlobalMemoryBusWidth];
    prop->l2CacheSize = a[cudaDevAttrL2CacheSize];
    prop->persistingL2CacheMaxSize = a[cudaDevAttrMaxPersistingL2CacheSize];
    prop->maxThreadsPerMultiProcessor = a[cudaDevAttrMaxThreadsPerMultiProcessor];
    prop->streamPrioritiesSupported = a[cudaDevAttrStreamPrioritiesSupported];
    prop->globalL1CacheSupported = a[cudaDevAttrGlobalL1CacheSupported];
    prop->localL1CacheSupported = a[cudaDevAttrLocalL1CacheSupported];
    prop->sharedMemPerMultiprocessor = (size_t)a[cudaDevAttrMaxSharedMemoryPerMultiprocessor];
    prop->regsPerMultiprocessor = a[cudaDevAttrMaxRegistersPerMultiprocessor];
    prop->managedMemory = a[cudaDevAttrManagedMemory];
    prop->isMultiGpuBoard = a[cudaDevAttrIsMultiGpuBoard];
    prop->multiGpuBoardGroupID = a[cudaDevAttrMultiGpuBoardGroupID];
    prop->hostNativeAtomicSupported = a[cudaDevAttrHostNativeAtomicSupported];
    prop->pageableMemoryAccess = a[cudaDevAttrPageableMemoryAccess];
    prop->concurrentManagedAccess = a[cudaDevAttrConcurrentManagedAccess];
    prop->computePreemptionSupported = a[cudaDevAttrComputePreemptionSupported];
    prop->canUseHostPointerForRegisteredMem = a[cudaDevAttrCanUseHostPointerForRegisteredMem];
    prop->cooperativeLaunch = a[cudaDevAttrCooperativeLaunch];
    prop->sharedMemPerBlockOptin = (size_t)a[cudaDevAttrMaxSharedMemoryPerBlockOptin];
    prop->pageableMemoryAccessUsesHostPageTables = a[cudaDevAttrPageableMemoryAccessUsesHostPageTables];
    prop->directManagedMemAccessFromHost = a[cudaDevAttrDirectManagedMemAccessFromHost];
    prop->maxBlocksPerMultiProcessor = a[cudaDevAttrMaxBlocksPerMultiprocessor];
    prop->accessPolicyMaxWindowSize = a[cudaDevAttrMaxAccessPolicyWindowSize];
    prop->reservedSharedMemPerBlock = (size_t)a[cudaDevAttrReservedSharedMemoryPerBlock];
    prop->hostRegisterSupported = a[cudaDevAttrHostRegisterSupported];
    prop->sparseCudaArraySupported = a[cudaDevAttrSparseCudaArraySupported];
    prop->hostRegisterReadOnlySupported = a[cudaDevAttrHostRegisterReadOnlySupported];
    prop->timelineSemaphoreInteropSupported = a[cudaDevAttrTimelineSemaphoreInteropSupported];
    prop->memoryPoolsSupported = a[cudaDevAttrMemoryPoolsSupported];
    prop->gpuDirectRDMASupported = a[cudaDevAttrGPUDirectRDMASupported];
    prop->gpuDirectRDMAFlushWritesOptions = (unsigned)a[cudaDevAttrGPUDirectRDMAFlushWritesOptions];
    prop->gpuDirectRDMAWritesOrdering = a[cudaDevAttrGPUDirectRDMAWritesOrdering];
    prop->memoryPoolSupportedHandleTypes = (unsigned)a[cudaDevAttrMemoryPoolSupportedHandleTypes];
    prop->deferredMappingCudaArraySupported = a[cudaDevAttrDeferredMappingCudaArraySupported];
    prop->ipcEventSupported = a[cudaDevAttrIpcEventSupport];
    prop->clusterLaunch = a[cudaDevAttrClusterLaunch];
    prop->deviceNumaConfig = a[cudaDevAttrNumaConfig];
    prop->deviceNumaId = a[cudaDevAttrNumaId];
    prop->mpsEnabled = a[cudaDevAttrMpsEnabled];
    prop->hostNumaId = a[cudaDevAttrHostNumaId];
    prop->gpuPciDeviceID = (unsigned)a[cudaDevAttrGpuPciDeviceId];
    prop->gpuPciSubsystemID = (unsigned)a[cudaDevAttrGpuPciSubsystemId];
    prop->hostNumaMultinodeIpcSupported = a[cudaDevAttrHostNumaMultinodeIpcSupported];
    return cudaSuccess;
}

cudaError_t cudaChooseDevice(int *device, const struct cudaDeviceProp *prop)
{
    if (!device || !prop)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    *device = 0;   /* every vGPU of a lease is alike enough: the first one */
    return cudaSuccess;
}

struct cudaChannelFormatDesc cudaCreateChannelDesc(int x, int y, int z, int w,
                                                   enum cudaChannelFormatKind f)
{
    struct cudaChannelFormatDesc desc = {x, y, z, w, f};
    return desc;
}

/* One line in the log per call the client does not forward yet; never a crash. */
cudaError_t orion_unsupported(const char *name)
{
    if (orion_first_time(name)) {
        orion_init();   /* the log is opened there */
        ORION_WARN("%s is not supported by Orion yet: returning cudaErrorNotSupported", name);
    }
    return orion_fail(cudaErrorNotSupported);
}
