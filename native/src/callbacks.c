/* Host functions enqueued on a stream run in the client process, where their code and
 * data live. The stream is drained first and the function runs before the call returns:
 * it still runs after all earlier work of the stream and before any later work (which
 * the application can only enqueue after this call returns), at the cost of the
 * overlap the real runtime would give. */
#include "orion.h"

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void *userData)
{
    if (!fn)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = cudaStreamSynchronize(stream);
    if (err != cudaSuccess)
        return err;
    fn(userData);
    return cudaSuccess;
}

cudaError_t cudaStreamAddCallback(cudaStream_t stream, cudaStreamCallback_t callback,
                                  void *userData, unsigned int flags)
{
    if (!callback || flags != 0)
        return orion_fail(cudaErrorInvalidValue);
    /* The callback is told the stream's status, errors included, as CUDA does. */
    cudaError_t status = cudaStreamSynchronize(stream);
    callback(stream, status, userData);
    return cudaSuccess;
}
