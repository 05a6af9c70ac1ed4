/* Client configuration: environment > ~/.orion/client.toml > /etc/orion/client.toml. */
#pragma once

typedef struct orion_config {
    char controller[256];     /* [controller] controller_addr / ORION_CONTROLLER */
    int enable_net;           /* [client] enable_net: use tcp:// even on the same host */
    int vgpu;                 /* ORION_VGPU (default 1) */
    long long gmem_mib;       /* ORION_GMEM, 0 = the server's default */
    int ratio;                /* ORION_RATIO, 0 = the server's default */
    char client_id[128];      /* ORION_CLIENT_ID */
    char error[256];          /* set when a value is invalid */
} orion_config;

/* 0 on success; -1 with cfg->error saying which setting is wrong. */
int orion_config_load(orion_config *cfg);
