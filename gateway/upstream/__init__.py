"""Everything between the gateway and its upstreams: client, pools, balancing, resilience."""
