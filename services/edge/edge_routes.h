/* edge_routes - the edge's HTTP routes: request ids, health and readiness,
 * clear errors for unknown routes and methods, and "not implemented" for the
 * parts of the public API that are not built yet (README lists them). */
#ifndef EDGE_ROUTES_H
#define EDGE_ROUTES_H

#include "edge.h"

/* edge_routes_register - install the edge's handler on the h2o configuration. */
void edge_routes_register(edge_t *edge);

int edge_routes_test(bool verbose);

#endif
