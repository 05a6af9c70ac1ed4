/* Control plane of the client: ask the controller for vGPUs, open sessions on servers. */
#pragma once

#include "config.h"
#include "orion.h"


typedef struct orion_grant {
    char server[256];       /* oriond's address, tcp://host:port */
    char node[128];
    char gpu_name[256];
    char gpu_uuid[64];      /* the physical GPU's: servers find it by this */
    char vgpu_uuid[64];     /* the vGPU's own, as NVML shows it (orion_controller/identity.py) */
    int gpu_index;
    long long memory_mib;
    int ratio;
    char vgpu_id[96];
} orion_grant;

typedef struct orion_lease {
    char id[64];
    int count;
    orion_grant grants[ORION_MAX_DEVICES];
} orion_lease;

/* 0 on success; -1 with `why` filled in (controller unreachable, refused, ...). */
int orion_allocate(const orion_config *cfg, orion_lease *lease, char *why, size_t why_size);
/* What orion_allocate would get now, holding nothing (no lease id comes back). */
int orion_preview(const orion_config *cfg, orion_lease *lease, char *why, size_t why_size);
void orion_release(const orion_config *cfg, const orion_lease *lease);
/* Open a session on `server` for the grants of the lease held there; where its worker
 * listens comes back in `address`. */
int orion_open_session(const orion_config *cfg, const orion_lease *lease, const char *server,
                       orion_session_address *address, char *why, size_t why_size);
