/* Fat binaries, kernels and their launches.
 *
 * Before main() the compiler's start-up code registers each fat binary and the kernels
 * and variables in it (crt/host_runtime.h). Nothing is sent then: no session exists
 * yet. The first use of a kernel on a device loads its module there (once per session,
 * keyed by a content hash so the server can reuse it) and fetches the kernel's parameter
 * layout; a launch then packs the argument bytes at those offsets into one buffer and
 * sends it without waiting for a reply.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cudart_internal.h"
#include "kernels.h"

#define FATBIN_WRAPPER_MAGIC 0x466243b1
#define FATBIN_MAGIC 0xBA55ED50u
#define MAX_PARAMS 2048
#define INFO_SIZE (12 + 8 * MAX_PARAMS)
#define LAUNCH_COOPERATIVE 1u

typedef struct { int magic; int version; const void *data; void *filename; } fatbin_wrapper;
typedef struct { uint32_t magic; uint16_t version; uint16_t header_size; uint64_t fat_size; }
    fatbin_header;

typedef struct module {
    const void *image;
    size_t size;
    uint64_t hash;
    unsigned char loaded[ORION_MAX_DEVICES];
    struct module *next;
} module;

typedef struct kernel_info {      /* one kernel on one device */
    uint64_t handle;
    uint32_t count;
    uint32_t end;                 /* size of the packed argument buffer */
    uint32_t *offset, *size;
} kernel_info;

typedef struct kernel {
    const void *host_fun;
    module *mod;
    char *name;
    kernel_info *info[ORION_MAX_DEVICES];
    struct kernel *next;
} kernel;

typedef struct variable {
    const void *host_var;
    module *mod;
    char *name;
    uint64_t address[ORION_MAX_DEVICES];
    size_t size[ORION_MAX_DEVICES];
    struct variable *next;
} variable;

static module *modules;
static kernel *kernels;
static variable *variables;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t fnv1a(const void *data, size_t size)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

void **__cudaRegisterFatBinary(void *fatCubin)
{
    const fatbin_wrapper *w = fatCubin;
    module *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (w && w->magic == FATBIN_WRAPPER_MAGIC && w->data) {
        const fatbin_header *h = w->data;
        if (h->magic == FATBIN_MAGIC) {
            m->image = h;
            m->size = h->header_size + h->fat_size;
            m->hash = fnv1a(m->image, m->size);
        }
    }
    pthread_mutex_lock(&registry_lock);
    m->next = modules;
    modules = m;
    pthread_mutex_unlock(&registry_lock);
    return (void **)m;
}

void __cudaRegisterFatBinaryEnd(void **fatCubinHandle)
{
    (void)fatCubinHandle;
}

void __cudaUnregisterFatBinary(void **fatCubinHandle)
{
    /* Runs at exit, after the runtime may be gone; the worker frees modules itself. */
    (void)fatCubinHandle;
}

char __cudaInitModule(void **fatCubinHandle)
{
    (void)fatCubinHandle;
    return 1;
}

void __cudaRegisterFunction(void **fatCubinHandle, const char *hostFun, char *deviceFun,
                            const char *deviceName, int thread_limit, uint3 *tid, uint3 *bid,
                            dim3 *bDim, dim3 *gDim, int *wSize)
{
    (void)deviceFun; (void)thread_limit; (void)tid; (void)bid; (void)bDim; (void)gDim;
    (void)wSize;
    kernel *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->host_fun = hostFun;
    k->mod = (module *)fatCubinHandle;
    k->name = strdup(deviceName);
    pthread_mutex_lock(&registry_lock);
    k->next = kernels;
    kernels = k;
    pthread_mutex_unlock(&registry_lock);
}

void __cudaRegisterVar(void **fatCubinHandle, char *hostVar, char *deviceAddress,
                       const char *deviceName, int ext, size_t size, int constant, int global)
{
    (void)deviceAddress; (void)ext; (void)size; (void)constant; (void)global;
    variable *v = calloc(1, sizeof *v);
    if (!v)
        return;
    v->host_var = hostVar;
    v->mod = (module *)fatCubinHandle;
    v->name = strdup(deviceName);
    pthread_mutex_lock(&registry_lock);
    v->next = variables;
    variables = v;
    pthread_mutex_unlock(&registry_lock);
}

void __cudaRegisterManagedVar(void **fatCubinHandle, void **hostVarPtrAddress,
                              char *deviceAddress, const char *deviceName, int ext,
                              size_t size, int constant, int global)
{
    (void)fatCubinHandle; (void)hostVarPtrAddress; (void)deviceAddress; (void)ext;
    (void)size; (void)constant; (void)global;
    ORION_WARN("managed variable %s: managed memory is not supported", deviceName);
}

void __cudaRegisterHostVar(void **fatCubinHandle, const char *deviceName, void *hostVar,
                           size_t size)
{
    (void)fatCubinHandle; (void)hostVar; (void)size;
    ORION_WARN("host variable %s is not supported", deviceName);
}

/* ---- launch configuration stack of <<<...>>> (per thread, as in the runtime) ---- */

typedef struct { dim3 grid, block; size_t shmem; cudaStream_t stream; } launch_config;
static __thread launch_config config_stack[8];
static __thread int config_depth;

unsigned __cudaPushCallConfiguration(dim3 gridDim, dim3 blockDim, size_t sharedMem,
                                     struct CUstream_st *stream)
{
    if (config_depth == 8)
        return 1;
    config_stack[config_depth++] = (launch_config){gridDim, blockDim, sharedMem, stream};
    return 0;
}

cudaError_t __cudaPopCallConfiguration(dim3 *gridDim, dim3 *blockDim, size_t *sharedMem,
                                       void *stream)
{
    if (config_depth == 0)
        return orion_fail(cudaErrorMissingConfiguration);
    launch_config c = config_stack[--config_depth];
    *gridDim = c.grid;
    *blockDim = c.block;
    *sharedMem = c.shmem;
    *(cudaStream_t *)stream = c.stream;
    return cudaSuccess;
}

/* ---- lookups and lazy loading ---- */

static kernel *find_kernel(const void *host_fun)
{
    pthread_mutex_lock(&registry_lock);
    kernel *k = kernels;
    while (k && k->host_fun != host_fun && (const void *)k != host_fun)
        k = k->next;
    pthread_mutex_unlock(&registry_lock);
    return k;
}

static cudaError_t ensure_module(module *m, int device)
{
    if (!m->image)
        return orion_fail(cudaErrorInvalidKernelImage);
    if (m->loaded[device])
        return cudaSuccess;
    cudaError_t err = orionModuleLoad(m->hash, m->image, m->size);
    if (err == cudaSuccess)
        m->loaded[device] = 1;
    return err;
}

/* The kernel's layout on the current device, fetched once. Registry lock held. */
static cudaError_t kernel_info_of(kernel *k, kernel_info **out)
{
    int device = orion_current_device();
    if (device < 0 || device >= ORION_MAX_DEVICES)
        return orion_fail(cudaErrorInvalidDevice);
    if (k->info[device]) {
        *out = k->info[device];
        return cudaSuccess;
    }
    cudaError_t err = ensure_module(k->mod, device);
    if (err != cudaSuccess)
        return err;
    unsigned char *raw = malloc(INFO_SIZE);
    kernel_info *info = calloc(1, sizeof *info);
    if (!raw || !info) {
        free(raw);
        free(info);
        return orion_fail(cudaErrorMemoryAllocation);
    }
    err = orionFunctionInfo(k->mod->hash, k->name, raw, INFO_SIZE);
    if (err == cudaSuccess) {
        memcpy(&info->handle, raw, 8);
        memcpy(&info->count, raw + 8, 4);
        if (info->count > MAX_PARAMS)
            err = orion_fail(cudaErrorInvalidValue);
    }
    if (err == cudaSuccess) {
        info->offset = calloc(info->count + 1, sizeof *info->offset);
        info->size = calloc(info->count + 1, sizeof *info->size);
        for (uint32_t i = 0; i < info->count; i++) {
            memcpy(&info->offset[i], raw + 12 + 8 * i, 4);
            memcpy(&info->size[i], raw + 16 + 8 * i, 4);
            if (info->offset[i] + info->size[i] > info->end)
                info->end = info->offset[i] + info->size[i];
        }
        k->info[device] = info;
        *out = info;
    } else {
        free(info);
    }
    free(raw);
    return err;
}

static cudaError_t resolve(const void *func, kernel_info **info)
{
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    kernel *k = find_kernel(func);
    if (!k)
        return orion_fail(cudaErrorInvalidDeviceFunction);
    pthread_mutex_lock(&registry_lock);
    err = kernel_info_of(k, info);
    pthread_mutex_unlock(&registry_lock);
    return err;
}

cudaError_t orion_pack_args(const void *func, void **args, orion_packed_args *out)
{
    kernel_info *info;
    cudaError_t err = resolve(func, &info);
    if (err != cudaSuccess)
        return err;
    if (info->count && !args)
        return orion_fail(cudaErrorInvalidValue);
    out->function = info->handle;
    out->size = info->end;
    out->bytes = info->end <= sizeof out->small ? out->small : malloc(info->end);
    if (!out->bytes)
        return orion_fail(cudaErrorMemoryAllocation);
    memset(out->bytes, 0, info->end);   /* padding between parameters is sent as zeros */
    for (uint32_t i = 0; i < info->count; i++)
        memcpy(out->bytes + info->offset[i], args[i], info->size[i]);
    return cudaSuccess;
}

void orion_packed_args_free(orion_packed_args *packed)
{
    if (packed->bytes != packed->small)
        free(packed->bytes);
}

static cudaError_t launch(const void *func, dim3 grid, dim3 block, void **args, size_t shmem,
                          cudaStream_t stream, unsigned flags)
{
    orion_packed_args packed;
    cudaError_t err = orion_pack_args(func, args, &packed);
    if (err != cudaSuccess)
        return err;
    err = orionLaunchKernel(packed.function, grid, block, shmem, stream, flags, packed.bytes,
                            packed.size);
    orion_packed_args_free(&packed);
    return err;
}

cudaError_t cudaLaunchKernel(const void *func, dim3 gridDim, dim3 blockDim, void **args,
                             size_t sharedMem, cudaStream_t stream)
{
    return launch(func, gridDim, blockDim, args, sharedMem, stream, 0);
}

cudaError_t cudaLaunchCooperativeKernel(const void *func, dim3 gridDim, dim3 blockDim,
                                        void **args, size_t sharedMem, cudaStream_t stream)
{
    return launch(func, gridDim, blockDim, args, sharedMem, stream, LAUNCH_COOPERATIVE);
}

cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t *config, const void *func, void **args)
{
    if (!config)
        return orion_fail(cudaErrorInvalidValue);
    unsigned flags = 0;
    for (unsigned i = 0; i < config->numAttrs; i++) {
        const cudaLaunchAttribute *a = &config->attrs[i];
        if (a->id == cudaLaunchAttributeCooperative && a->val.cooperative)
            flags |= LAUNCH_COOPERATIVE;
        else if (a->id == cudaLaunchAttributePriority)
            continue;   /* a scheduling hint; the stream's own priority still applies */
        else if (a->id != cudaLaunchAttributeIgnore && a->id != cudaLaunchAttributeCooperative)
            return orion_unsupported("cudaLaunchKernelExC with launch attributes");
    }
    return launch(func, config->gridDim, config->blockDim, args, config->dynamicSmemBytes,
                  config->stream, flags);
}

cudaError_t __cudaGetKernel(cudaKernel_t *kernelPtr, const void *fun)
{
    kernel *k = find_kernel(fun);
    if (!kernelPtr || !k)
        return orion_fail(cudaErrorInvalidDeviceFunction);
    *kernelPtr = (cudaKernel_t)k;   /* our handle is the registry entry */
    return cudaSuccess;
}

cudaError_t cudaGetKernel(cudaKernel_t *kernelPtr, const void *entryFuncAddr)
{
    return __cudaGetKernel(kernelPtr, entryFuncAddr);
}

cudaError_t cudaGetFuncBySymbol(cudaFunction_t *functionPtr, const void *symbolPtr)
{
    kernel *k = find_kernel(symbolPtr);
    if (!functionPtr || !k)
        return orion_fail(cudaErrorInvalidDeviceFunction);
    *functionPtr = (cudaFunction_t)k;
    return cudaSuccess;
}

cudaError_t cudaFuncGetName(const char **name, const void *func)
{
    kernel *k = find_kernel(func);
    if (!name || !k)
        return orion_fail(cudaErrorInvalidDeviceFunction);
    *name = k->name;
    return cudaSuccess;
}

cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim, void **args,
                               size_t sharedMem, cudaStream_t stream)
{
    return launch(kernel, gridDim, blockDim, args, sharedMem, stream, 0);
}

cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim,
                                    void **args, size_t sharedMem, cudaStream_t stream)
{
    return launch(kernel, gridDim, blockDim, args, sharedMem,
                  stream ? stream : cudaStreamPerThread, 0);
}

/* ---- function attributes and occupancy ---- */

cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, const void *func)
{
    kernel_info *info;
    if (!attr)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = resolve(func, &info);
    return err != cudaSuccess ? err : orionFuncGetAttributes(info->handle, attr);
}

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    kernel_info *info;
    cudaError_t err = resolve(func, &info);
    return err != cudaSuccess ? err : orionFuncSetAttribute(info->handle, attr, value);
}

cudaError_t cudaFuncSetCacheConfig(const void *func, enum cudaFuncCache cacheConfig)
{
    kernel_info *info;
    cudaError_t err = resolve(func, &info);
    return err != cudaSuccess ? err : orionFuncSetCacheConfig(info->handle, cacheConfig);
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    int *numBlocks, const void *func, int blockSize, size_t dynamicSMemSize, unsigned int flags)
{
    kernel_info *info;
    if (!numBlocks)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = resolve(func, &info);
    return err != cudaSuccess ? err
                              : orionOccupancy(info->handle, blockSize, dynamicSMemSize, flags,
                                               numBlocks);
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, const void *func,
                                                          int blockSize, size_t dynamicSMemSize)
{
    return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(numBlocks, func, blockSize,
                                                                  dynamicSMemSize, 0);
}

cudaError_t cudaOccupancyAvailableDynamicSMemPerBlock(size_t *dynamicSmemSize, const void *func,
                                                      int numBlocks, int blockSize)
{
    kernel_info *info;
    if (!dynamicSmemSize)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = resolve(func, &info);
    return err != cudaSuccess ? err
                              : orionOccupancyAvailableSMem(info->handle, numBlocks, blockSize,
                                                            dynamicSmemSize);
}

/* ---- device variables ---- */

cudaError_t orion_symbol(const void *host_var, void **address, size_t *size)
{
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    int device = orion_current_device();
    pthread_mutex_lock(&registry_lock);
    variable *v = variables;
    while (v && v->host_var != host_var)
        v = v->next;
    if (!v) {
        pthread_mutex_unlock(&registry_lock);
        return orion_fail(cudaErrorInvalidSymbol);
    }
    if (!v->address[device]) {
        err = ensure_module(v->mod, device);
        unsigned long long addr = 0;
        size_t sz = 0;
        if (err == cudaSuccess)
            err = orionVarInfo(v->mod->hash, v->name, &addr, &sz);
        if (err == cudaSuccess) {
            v->address[device] = addr;
            v->size[device] = sz;
        }
    }
    *address = (void *)(uintptr_t)v->address[device];
    *size = v->size[device];
    pthread_mutex_unlock(&registry_lock);
    return err;
}
