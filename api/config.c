/*
 * config.c: the server's limits and their defaults, and the part of a
 * server that needs no runtime (so unit tests can build one).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_int.h"

void http_server_config_defaults(http_server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->backlog = 1024;
    cfg->max_uri = 2048;
    cfg->max_headers = 8192;
    cfg->max_body = 65536;
    cfg->max_conns = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 10000;
    cfg->write_timeout_ms = 10000;
    cfg->read_buf = 4096;
    cfg->max_pipeline_out = 262144;
}

int http__server_init(http_server *srv, const http_server_config *cfg,
                      const http_service *svc)
{
    http_server_config d;
    http_server_config_defaults(&d);
    memset(srv, 0, sizeof *srv);
    srv->cfg = *cfg;
    http_server_config *c = &srv->cfg;
#define DEF(f) if (!c->f) c->f = d.f
    DEF(host); DEF(backlog); DEF(max_uri); DEF(max_headers); DEF(max_body);
    DEF(max_conns); DEF(idle_timeout_ms); DEF(header_timeout_ms);
    DEF(body_timeout_ms); DEF(write_timeout_ms); DEF(read_buf);
    DEF(max_pipeline_out);
#undef DEF
    if (c->read_buf < 1024)
        c->read_buf = 1024;
    srv->svc = svc;
    if (cfg->admin_token && cfg->admin_token[0]) {
        if ((srv->token = strdup(cfg->admin_token)) == NULL)
            return -ENOMEM;
        srv->token_len = strlen(srv->token);
    }
    c->admin_token = NULL;   /* the token may change: read srv->token */
    srv->lfd = NULL;
    srv->port = cfg->port;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_mutex_init(&srv->token_lock, NULL);
    return 0;
}

void http__server_fini(http_server *srv)
{
    if (srv->token)
        memset(srv->token, 0, srv->token_len);
    free(srv->token);
    srv->token = NULL;
    pthread_mutex_destroy(&srv->lock);
    pthread_mutex_destroy(&srv->token_lock);
}
