/* Graph nodes whose parameters point into the client: kernel nodes (a host function
 * pointer and an array of argument pointers) and host nodes (a client function). */
#include <stdlib.h>

#include "cudart_internal.h"
#include "kernels.h"
#include "orion.h"

cudaError_t orion_host_fn_persistent(cudaHostFn_t fn, void *data, uint64_t *id);

static cudaError_t kernel_node(cudaGraphNode_t *pGraphNode, cudaGraph_t graph,
                               const cudaGraphNode_t *deps, size_t n, cudaGraphExec_t exec,
                               cudaGraphNode_t node, const struct cudaKernelNodeParams *p)
{
    if (!p || (pGraphNode == NULL && node == NULL))
        return orion_fail(cudaErrorInvalidValue);
    if (p->extra)
        return orion_unsupported("kernel node parameters given as `extra`");
    orion_packed_args packed;
    cudaError_t err = orion_pack_args(p->func, p->kernelParams, &packed);
    if (err != cudaSuccess)
        return err;
    err = pGraphNode ? orionGraphAddKernelNode(pGraphNode, graph, deps, n, packed.function,
                                               p->gridDim, p->blockDim, p->sharedMemBytes,
                                               packed.bytes, packed.size)
                     : orionGraphKernelNodeSetParams(exec, node, packed.function, p->gridDim,
                                                     p->blockDim, p->sharedMemBytes,
                                                     packed.bytes, packed.size);
    orion_packed_args_free(&packed);
    return err;
}

cudaError_t cudaGraphAddKernelNode(cudaGraphNode_t *pGraphNode, cudaGraph_t graph,
                                   const cudaGraphNode_t *pDependencies, size_t numDependencies,
                                   const struct cudaKernelNodeParams *pNodeParams)
{
    if (!pGraphNode)
        return orion_fail(cudaErrorInvalidValue);
    return kernel_node(pGraphNode, graph, pDependencies, numDependencies, NULL, NULL,
                       pNodeParams);
}

cudaError_t cudaGraphKernelNodeSetParams(cudaGraphNode_t node,
                                         const struct cudaKernelNodeParams *pNodeParams)
{
    return kernel_node(NULL, NULL, NULL, 0, NULL, node, pNodeParams);
}

cudaError_t cudaGraphExecKernelNodeSetParams(cudaGraphExec_t hGraphExec, cudaGraphNode_t node,
                                             const struct cudaKernelNodeParams *pNodeParams)
{
    if (!hGraphExec)
        return orion_fail(cudaErrorInvalidValue);
    return kernel_node(NULL, NULL, NULL, 0, hGraphExec, node, pNodeParams);
}

cudaError_t cudaGraphAddHostNode(cudaGraphNode_t *pGraphNode, cudaGraph_t graph,
                                 const cudaGraphNode_t *pDependencies, size_t numDependencies,
                                 const struct cudaHostNodeParams *pNodeParams)
{
    if (!pGraphNode || !pNodeParams || !pNodeParams->fn)
        return orion_fail(cudaErrorInvalidValue);
    uint64_t id;
    cudaError_t err = orion_host_fn_persistent(pNodeParams->fn, pNodeParams->userData, &id);
    if (err != cudaSuccess)
        return err;
    return orionGraphAddHostNode(pGraphNode, graph, pDependencies, numDependencies, id);
}
