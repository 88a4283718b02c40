"""Health and version: public, for load balancers and clients."""
